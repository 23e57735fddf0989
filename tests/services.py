"""Private PostgreSQL and Redis servers for fault tests: started, stopped and restarted at will.

The machine's own PostgreSQL (5432) and Redis (6379) are shared by every test run and are
never stopped by a test. A test that needs a dependency to fail starts one of these on a
free port in a temporary directory, points a gateway process at it, and stops it whenever
it likes. Both are removed when the test ends.

PostgreSQL refuses to run as root, so as root its tools run as the `postgres` system user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port

PG_BIN = Path(os.environ.get("GATEWAY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on its own port (trust auth, database `gateway`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/gateway"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"])

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(_as_postgres(command), check=check, capture_output=True, timeout=60)

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "server.log")
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])
        exists = self._run(["psql", *self._psql_args(), "-tAc", "SELECT 1 FROM pg_database WHERE datname='gateway'"])
        if not exists.stdout.strip():
            self._run(["psql", *self._psql_args(), "-c", "CREATE DATABASE gateway"])
        return self

    def _psql_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class PrivateRedis:
    """A throw-away Redis on its own port that keeps nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
