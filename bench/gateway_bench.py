"""Gateway overhead benchmark: wrk against mock-gpt-model, as `make run` serves it.

Starts the gateway with uvicorn on a fresh SQLite database (or $DATABASE_URL),
creates the demo key, and drives POST /v1/chat/completions with wrk at
concurrency 1 and 64, streaming and not. With the mock model there is no
upstream, so the figures are the gateway's own cost per request: auth,
validation, routing, logging. `--floor` also measures a bare ASGI app that
returns the same bytes on the same server, to read the gateway's cost as a
ratio within one run (this machine is noisy; absolute figures drift).

    python bench/gateway_bench.py [--duration 10] [--workers 1] [--floor]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BODY = '{"model":"mock-gpt-model","messages":[{"role":"user","content":"is 1 + 1 equal to 2?"}]}'
STREAM_BODY = BODY[:-1] + ',"stream":true}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def lua_script(path: Path, body: str, key: str) -> Path:
    body_lua = body.replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = '{body_lua}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
    )
    return path


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t",
        str(min(connections, 2)),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--floor", action="store_true", help="also measure a bare ASGI app (the floor)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'bench.sqlite3'}")
    env["DJANGO_SETTINGS_MODULE"] = "compat_api.settings"
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [PYTHON, "manage.py", "demo_setup", "--key-file", str(tmp / "key")],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    targets = [("gateway", "compat_api.asgi:application")]
    if args.floor:
        targets.append(("floor (bare ASGI)", "bench.floor_app:app"))
    results: list[tuple[str, str, int, dict[str, float]]] = []
    for label, app in targets:
        port = free_port()
        proc = start(
            [
                PYTHON,
                "-m",
                "uvicorn",
                app,
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url + "/v1/models")
            for mode, body in (("json", BODY), ("stream", STREAM_BODY)):
                script = lua_script(tmp / f"{mode}.lua", body, key)
                run_wrk(url + "/v1/chat/completions", script, 8, 2)  # warm up
                for conns in args.concurrency:
                    results.append(
                        (label, mode, conns, run_wrk(url + "/v1/chat/completions", script, conns, args.duration))
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print(f"\nworkers={args.workers} duration={args.duration}s  (latencies in ms)\n")
    print("| server | mode | conns | req/s | p50 | p99 | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, mode, conns, r in results:
        print(f"| {label} | {mode} | {conns} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']:.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
