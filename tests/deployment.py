"""What docker-compose.yml, the Dockerfile and the nginx template say, and running it without Docker.

No Docker engine runs on these machines, so the production tests run the same commands the
containers would: the `migrate` service's command, the image's CMD (`gunicorn -c
gunicorn.conf.py`), and Debian's nginx with the repository's template rendered as the nginx
image renders it (each `${NAME}` of its environment replaced; nginx's own `$host` and the like
left alone). tests/test_deploy_files.py checks that the files say what these helpers run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf.template"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_command() -> list[str]:
    """The image's CMD (exec form)."""
    cmds = [rest for word, rest in dockerfile_instructions() if word == "CMD"]
    assert len(cmds) == 1, "the Dockerfile has one CMD"
    command = json.loads(cmds[0])
    assert isinstance(command, list)
    return command


def render_template(text: str, env: dict[str, str]) -> str:
    """As the nginx image's envsubst step does: `${NAME}` of a variable in `env` becomes its value."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), m.group(0)), text)


def nginx_binary() -> str:
    """Debian's nginx; a test that needs it fails under CI (GATEWAY_REQUIRE_NGINX=1) and skips elsewhere."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    message = "nginx is not installed (Debian: apt-get install -y nginx); .ci/run installs it"
    if os.environ.get("GATEWAY_REQUIRE_NGINX") == "1":
        pytest.fail(message)
    pytest.skip(message)


class Nginx:
    """Debian's nginx in the foreground, proxying to `upstreams` with the repository's template."""

    def __init__(self, upstreams: list[str], max_body_size: str = "17m") -> None:
        self.binary = nginx_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="gw-nginx-"))
        self.env = {
            "NGINX_UPSTREAM_SERVERS": " ".join(f"server {address};" for address in upstreams),
            "NGINX_RESOLVER": "127.0.0.1",
            "NGINX_PORT": f"127.0.0.1:{self.port}",
            "NGINX_MAX_BODY_SIZE": max_body_size,
        }
        (self.dir / "gateway.conf").write_text(render_template(NGINX_TEMPLATE.read_text(), self.env))
        d = self.dir
        # The nginx image's own nginx.conf, reduced to what a test needs: it includes the template.
        (d / "nginx.conf").write_text(
            f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/gateway.conf;
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-t", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def __enter__(self) -> Nginx:
        checked = self.check()
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen([self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")])
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_pids(master_pid: int) -> set[int]:
    """The gunicorn workers of a master process (its children)."""
    path = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return {int(pid) for pid in path.read_text().split()} if path.exists() else set()


def metric_samples(text: str, name: str) -> dict[str, float]:
    """`{labels: value}` of every sample named exactly `name` in Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
    return out


def metric_total(text: str, name: str, **match: str) -> float:
    """The sum of the samples named `name` whose labels include `match`."""
    total = 0.0
    for labels, value in metric_samples(text, name).items():
        if all(f'{key}="{val}"' in labels for key, val in match.items()):
            total += value
    return total
