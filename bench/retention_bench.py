"""Retention under traffic: delete a million old request-log rows on PostgreSQL while the gateway serves.

Makes a database of its own on the PostgreSQL server of $BENCH_PG (default
postgres://postgres@127.0.0.1:5432), migrates it, copies in `--rows` request-log rows
100 to 200 days old and 20,000 recent ones, starts the production command (gunicorn -c
gunicorn.conf.py, two workers; Redis from $REDIS_URL, default the local one) and drives
mock chat completions with wrk (`--connections`, closed loop). It measures the latency of
that traffic first alone, then in 5-second slices while `manage.py prune_logs` deletes the
old rows (90 days' retention, batches of 5,000 keys), and prints both, the time the delete
took, and its slowest batch (transaction).

    python bench/retention_bench.py [--rows 1000000] [--connections 4]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.gateway_bench import BODY, free_port, lua_script, run_wrk, wait_ready  # noqa: E402

SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
NAME = "gw_retention_bench"
URL = f"{SERVER}/{NAME}"


def psql(sql: str) -> None:
    subprocess.run(["psql", f"{SERVER}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def new_key() -> str:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from completions.keys import create_api_key

    user = get_user_model().objects.create_user("bench-" + secrets.token_hex(4))
    _, key = create_api_key(user, "bench")
    connection.close()
    return key


def fill(rows: int, recent: int = 20_000) -> None:
    """Copy `rows` old rows and `recent` new ones in, through Django's own column preparation."""
    from django.db import connection

    from completions.models import RequestLog
    from completions.recorder import RequestRecord, _insert_plan, to_values

    sql, prepare = _insert_plan()
    columns = sql[sql.index("(") + 1 : sql.index(")")]
    now = datetime.now(UTC)
    span = timedelta(days=100).total_seconds()
    started = time.monotonic()
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {RequestLog._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for i in range(rows + recent):
            old = i < rows
            age = timedelta(days=100, seconds=span * (1 - i / rows)) if old else timedelta(minutes=i - rows)
            record = RequestRecord(
                request_id=f"bench-{secrets.token_hex(4)}-{i}",
                created_at=now - age,
                model="mock-gpt-model",
                provider="mock",
                prompt_tokens=12,
                completion_tokens=30,
                latency_ms=40,
            )
            record.attempts = [{"route": "mock:mock-gpt-model", "ok": True, "ms": 1}]
            copy.write_row(prepare(to_values(record)))
    print(f"copied {rows + recent} rows in {time.monotonic() - started:.0f} s")
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--baseline", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--pause", type=float, default=0.05)
    args = parser.parse_args()
    psql(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{NAME}"')
    env = {
        **os.environ,
        "DATABASE_URL": URL,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "GATEWAY_REDIS_PREFIX": "retention-bench-" + secrets.token_hex(4),
        "CACHE_KEY_PREFIX": "retention-bench-" + secrets.token_hex(4),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + secrets.token_urlsafe(40),
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "compat_api.settings",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    setup_django(env)
    fill(args.rows)
    key = new_key()
    port = free_port()
    server_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "WORKERS": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=server_env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/healthz")
        with tempfile.TemporaryDirectory() as tmp:
            script = lua_script(Path(tmp) / "chat.lua", BODY, key)
            target = url + "/v1/chat/completions"
            run_wrk(target, script, args.connections, 3)  # warm up
            base = run_wrk(target, script, args.connections, args.baseline)
            print(f"traffic alone:        {base['rps']:.0f} req/s, p50 {base['p50']:.2f} ms, p99 {base['p99']:.2f} ms")
            size = subprocess.run(
                [
                    "psql",
                    URL,
                    "-tAc",
                    "SELECT pg_total_relation_size('completions_requestlog') / count(*) FROM completions_requestlog",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"request log: {size} bytes per row on disk (table, indexes and TOAST)")
            prune_command = [sys.executable, "manage.py", "prune_logs", "--target", "request_log", "--days", "90"]
            prune_command += ["--batch-size", str(args.batch_size), "--pause", str(args.pause)]
            prune = subprocess.Popen(prune_command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            started = time.monotonic()
            slices = []
            while prune.poll() is None:
                slices.append(run_wrk(target, script, args.connections, 5))
            took = time.monotonic() - started
            output = prune.stdout.read() if prune.stdout else ""
            print(output.strip())
            print(f"prune_logs took {took:.1f} s while serving")
            for i, s in enumerate(slices):
                rate, p50, p99 = s["rps"], s["p50"], s["p99"]
                print(
                    f"  slice {i:2d}: {rate:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, non-2xx {s['non2xx']:.0f}"
                )
            worst = max(s["p99"] for s in slices) if slices else float("nan")
            mean = sum(s["p99"] for s in slices) / len(slices) if slices else float("nan")
            rps = sum(s["rps"] for s in slices) / len(slices) if slices else float("nan")
            print(f"during the delete: {rps:.0f} req/s, p99 mean of slices {mean:.2f} ms, worst slice {worst:.2f} ms")
            print(f"gateway right after: {httpx.get(url + '/healthz').json()}")
            again = run_wrk(target, script, args.connections, args.baseline)
            print(
                f"traffic alone again:  {again['rps']:.0f} req/s, p50 {again['p50']:.2f} ms, p99 {again['p99']:.2f} ms"
            )

    finally:
        server.terminate()
        server.wait(30)
        psql(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
