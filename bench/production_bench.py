"""The production-path benchmark: the gateway as operators run it, beside a raw forwarder and LiteLLM.

Starts, all on loopback:
- a fixed-body upstream: Debian's nginx answering a static chat completion (`/json/...`) and a
  static SSE stream (`/sse/...`);
- a paced streaming upstream (`bench/paced_upstream.py`): a chunk every 20 ms (`/paced/...`), or
  every 250 ms for streams that stay open (`/long/...`);
- the gateway with its production command (`gunicorn -c gunicorn.conf.py`, two uvicorn workers)
  on a throw-away PostgreSQL database and the machine's Redis (its own key prefix), a key with
  RPM, TPM and budget limits, the request log and its roll-ups on, OpenAI-compatible routes to
  the upstreams (failover and circuit breakers as always);
- the floor: `bench/raw_forwarder.py`, a raw ASGI forwarder (uvicorn + uvloop + httptools, one
  pooled aiohttp session, two workers);
- LiteLLM's proxy (two workers, no database), from its own virtualenv (`bench/.litellm-venv`).

Then drives them interleaved (each measurement runs on every server before the next
measurement; the order rotates per round) with wrk and an asyncio stream client, and prints
the table with ratios. After the rounds: 1,000 concurrent streams on a one-worker gateway, the
RSS of a worker over the run, and the request log's rows and write rate.

    python bench/production_bench.py [--rounds 3] [--duration 10] [--no-litellm]

Needs wrk and nginx (Debian: `apt-get install -y wrk nginx`), PostgreSQL and Redis reachable at
--pg-url and --redis-url, and for LiteLLM:
`python3 -m venv bench/.litellm-venv && bench/.litellm-venv/bin/pip install 'litellm[proxy]==1.106.*'`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stream_client  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")

QUESTION = [{"role": "user", "content": "is 1 + 1 equal to 2?"}]
UPSTREAM_JSON = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "bench-json",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Yes: 1 + 1 equals 2.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22},
}


def _sse_body() -> str:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench-sse",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"

    words = ["Yes:", " 1", " +", " 1", " equals", " 2."]
    events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words]
    events.append(chunk({}, "stop"))
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench-sse"}
    usage |= {"choices": [], "usage": {"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19}}
    events.append("data: " + json.dumps(usage, separators=(",", ":")) + "\n\n")
    return "".join(events) + "data: [DONE]\n\n"


NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /json/v1/chat/completions {{ default_type application/json; return 200 '{json}'; }}
        location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 '{sse}'; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- processes -------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def rss_mib(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * PAGE / 2**20


@dataclass
class Server:
    """One server under test: its process group, and how to reach its chat completions."""

    name: str
    proc: subprocess.Popen[bytes] | None
    url: Callable[[str], str]  # model -> URL
    headers: dict[str, str]
    model_field: bool = True  # whether the request names the model (the raw forwarder ignores it)
    workers: Callable[[], list[int]] = field(default=lambda: [])

    def body(self, model: str, stream: bool = False) -> bytes:
        payload: dict[str, Any] = {"model": model, "messages": QUESTION}
        if stream:
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None else []

    def rss(self) -> tuple[float, float]:
        """(whole process tree, largest worker) resident MiB."""
        pids = self.pids()
        workers = self.workers() or pids
        return sum(rss_mib(p) for p in pids), max((rss_mib(p) for p in workers), default=0.0)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # the group this bench started (the server and its workers)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90, headers: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url}: the server exited ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer within {timeout:.0f} s; see {log}")


# ---- load ------------------------------------------------------------------------------------

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, body: bytes, headers: dict[str, str], conns: int, duration: float, tmp: Path) -> dict[str, float]:
    script = tmp / "wrk.lua"
    lines = ["wrk.method = 'POST'", f"wrk.body = '{body.decode()}'"]
    lines += [f"wrk.headers['{k}'] = '{v}'" for k, v in {"Content-Type": "application/json", **headers}.items()]
    script.write_text("\n".join(lines) + "\n")
    threads = 1 if conns == 1 else 2
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(conns),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    out = subprocess.run([*cmd, "-s", str(script), url], capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    done = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": float(done.group(1)) if done else 0.0,
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": float(bad.group(1) if bad else 0) + (sum(int(g) for g in errors.groups()) if errors else 0),
    }


# ---- the servers -----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    python: str
    db_name: str = ""
    redis_prefix: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nginx_port: int = 0
    unlimited_key: str = ""
    paced_port: int = 0
    key: str = ""

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def upstreams(self) -> Server:
        self.nginx_port, self.paced_port = free_port(), free_port()
        conf = self.tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                tmp=self.tmp,
                port=self.nginx_port,
                json=json.dumps(UPSTREAM_JSON, separators=(",", ":")),
                sse=_sse_body(),
            )
        )
        nginx = start(["nginx", "-c", str(conf), "-g", "daemon off;"], dict(os.environ), self.log("nginx"))
        paced = start(
            [self.python, "bench/paced_upstream.py", "--port", str(self.paced_port)],
            dict(os.environ),
            self.log("paced"),
        )
        self.procs += [nginx, paced]
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.paced_port), 1).close()
                socket.create_connection(("127.0.0.1", self.nginx_port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"the upstreams did not start; see {self.tmp}")
                time.sleep(0.1)
        return Server("upstream, direct", nginx, self._upstream_url, {}, model_field=False)

    def _upstream_url(self, model: str) -> str:
        kind = model.removeprefix("bench-")
        port = self.nginx_port if kind in ("json", "sse") else self.paced_port
        return f"http://127.0.0.1:{port}/{kind}/v1/chat/completions"

    def forwarder(self) -> Server:
        port = free_port()
        env = dict(os.environ)
        env.update(
            FORWARD_JSON=f"http://127.0.0.1:{self.nginx_port}",
            FORWARD_SSE=f"http://127.0.0.1:{self.nginx_port}",
            FORWARD_PACED=f"http://127.0.0.1:{self.paced_port}",
            FORWARD_LONG=f"http://127.0.0.1:{self.paced_port}",
        )
        cmd = [self.python, "-m", "uvicorn", "bench.raw_forwarder:app", "--port", str(port), "--workers", "2"]
        cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        proc = start(cmd, env, self.log("forwarder"))
        self.procs.append(proc)

        def url(model: str) -> str:
            return f"http://127.0.0.1:{port}/{model.removeprefix('bench-')}/v1/chat/completions"

        server = Server("raw forwarder, 2 workers", proc, url, {}, model_field=False)
        server.workers = lambda: [p for p in server.pids() if p != proc.pid]
        _wait_post(server, self.log("forwarder"))
        return server

    def litellm(self) -> Server | None:
        exe = Path(self.args.litellm_venv) / "bin" / "litellm"
        if self.args.no_litellm:
            return None
        if not exe.exists():
            print(
                f"LiteLLM is not installed at {exe}: python3 -m venv {self.args.litellm_venv} && "
                f"{self.args.litellm_venv}/bin/pip install 'litellm[proxy]==1.106.*' (or pass --no-litellm)"
            )
            return None
        port = free_port()
        models = []
        for model in ("bench-json", "bench-sse", "bench-paced", "bench-long"):
            base = self._upstream_url(model).removesuffix("/chat/completions")
            models.append(
                {"model_name": model, "litellm_params": {"model": f"openai/{model}", "api_base": base, "api_key": "x"}}
            )
        config = self.tmp / "litellm.json"  # JSON is YAML
        config.write_text(json.dumps({"model_list": models, "general_settings": {"master_key": "sk-bench-master"}}))
        env = dict(os.environ)
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY="sk-bench-master", LITELLM_LOG="ERROR")
        env.pop("DATABASE_URL", None)
        cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "2"]
        cmd += ["--timeout_worker_healthcheck", "300"]  # its workers take long to import on a busy machine
        proc = start(cmd, env, self.log("litellm"))
        self.procs.append(proc)
        server = Server(
            "LiteLLM proxy, 2 workers",
            proc,
            lambda model: f"http://127.0.0.1:{port}/v1/chat/completions",
            {"Authorization": "Bearer sk-bench-master"},
        )
        server.workers = lambda: [p for p in server.pids() if p != proc.pid]
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, self.log("litellm"), timeout=180)
        _wait_post(server, self.log("litellm"))
        return server

    # ---- the gateway: database, Redis, fixtures, gunicorn ----

    def gateway_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"{self.args.pg_url.rstrip('/')}/{self.db_name}",
            REDIS_URL=self.args.redis_url,
            GATEWAY_REDIS_PREFIX=self.redis_prefix,
            CACHE_KEY_PREFIX=self.redis_prefix,
            SECRET_KEY=secrets.token_urlsafe(48),
            DEBUG="false",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            GATEWAY_BUILTIN_ROUTES="false",
            DJANGO_SETTINGS_MODULE="compat_api.settings",
        )
        return env

    def prepare_gateway(self) -> None:
        self.db_name = f"gw_bench_{secrets.token_hex(4)}"
        self.redis_prefix = f"gwbench-{secrets.token_hex(4)}"
        _psql(self.args.pg_url, f"CREATE DATABASE {self.db_name}")
        env = self.gateway_env()
        subprocess.run([self.python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        nginx, paced = f"http://127.0.0.1:{self.nginx_port}", f"http://127.0.0.1:{self.paced_port}"
        out = (
            subprocess.run(
                [
                    *(self.python, "bench/prod_fixtures.py", "--json-base", f"{nginx}/json/v1"),
                    *("--sse-base", f"{nginx}/sse/v1", "--paced-base", f"{paced}/paced/v1"),
                    *("--long-base", f"{paced}/long/v1"),
                ],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()
        )
        self.key = out[-1]  # the last line (log lines may come first)
        self.unlimited_key = next(line.split()[1] for line in out if line.startswith("unlimited "))

    def gateway(self, workers: int = 2, name: str = "", root: Path = ROOT) -> Server:
        port = free_port()
        env = self.gateway_env()
        env.update(GUNICORN_BIND=f"127.0.0.1:{port}", WORKERS=str(workers))
        gunicorn = str(Path(self.python).parent / "gunicorn")
        label = name or f"gateway{workers}"
        cmd = [gunicorn, "-c", "gunicorn.conf.py", "compat_api.asgi:application"]
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=self.log(label).open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        where = "" if root == ROOT else f" ({root.name})"
        server = Server(
            f"this gateway, {workers} worker{'s' if workers > 1 else ''}{where}",
            proc,
            lambda model: f"http://127.0.0.1:{port}/v1/chat/completions",
            {"Authorization": f"Bearer {self.key}"},
        )
        server.workers = lambda: [p for p in server.pids() if p != proc.pid]
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, self.log(label))
        _wait_post(server, self.log(label))
        server.health = f"http://127.0.0.1:{port}/healthz"  # type: ignore[attr-defined]
        return server

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            stop(proc, signal.SIGQUIT if proc.args[0] == "nginx" else signal.SIGTERM)
        if self.db_name:
            try:
                _psql(self.args.pg_url, f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
            except subprocess.CalledProcessError as exc:
                print(f"could not drop {self.db_name}: {exc}")
        if self.redis_prefix:
            code = (
                "import redis, sys; r = redis.Redis.from_url(sys.argv[1]); "
                "keys = list(r.scan_iter(match=sys.argv[2] + '*', count=1000)); "
                "[r.delete(*keys[i:i + 500]) for i in range(0, len(keys), 500)]"
            )
            subprocess.run([self.python, "-c", code, self.args.redis_url, self.redis_prefix + ":"], check=False)


def _psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url.rstrip("/") + "/postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True)


def _wait_post(server: Server, log: Path, timeout: float = 30) -> None:
    """Until a chat completion answers 200 (the server is up and routed)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            server.url("bench-json"),
            data=server.body("bench-json"),
            headers={"Content-Type": "application/json", **server.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
            if hasattr(exc, "read"):
                last += " " + exc.read()[:300].decode(errors="replace")
        time.sleep(0.3)
    sys.exit(f"{server.name} never answered a chat completion ({last}); see {log}")


# ---- measurements ----------------------------------------------------------------------------


def measure_wrk(server: Server, conns: int, duration: float, tmp: Path) -> dict[str, float]:
    pids = server.pids()
    before = cpu_seconds(pids)
    result = wrk(server.url("bench-json"), server.body("bench-json"), server.headers, conns, duration, tmp)
    used = cpu_seconds(pids) - before
    result["cpu_ms"] = used * 1000 / result["requests"] if result["requests"] else float("nan")
    return result


def measure_ttft(server: Server, streams: int, duration: float) -> dict[str, float]:
    body = server.body("bench-paced", stream=True)
    headers = {"Content-Type": "application/json", **server.headers}
    stats = asyncio.run(stream_client.ttft(server.url("bench-paced"), body, headers, streams, duration))
    ttft = sorted(stats.ttft_ms)
    return {
        "ttft_p50": statistics.median(ttft) if ttft else float("nan"),
        "ttft_p99": ttft[int(len(ttft) * 0.99)] if ttft else float("nan"),
        "streams": float(len(ttft)),
        "stream_errors": float(stats.errors),
    }


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: str) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--hold-streams", type=int, default=1000, help="concurrent streams on one worker (0: skip)")
    parser.add_argument("--log-rows", type=int, default=20000, help="rows to time the log writer with (0: skip)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--litellm-venv", default=str(ROOT / "bench" / ".litellm-venv"))
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--only-gateway", action="store_true", help="the gateway and the upstream only (profiling)")
    parser.add_argument("--compare", metavar="DIR", help="also run the gateway from this source tree (before/after)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (printed path)")
    parser.add_argument("--keep", action="store_true", help="leave the servers running until Enter (profiling)")
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "nginx", "psql") if not shutil.which(tool)]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}. On Debian: apt-get install -y wrk nginx postgresql-client")

    tmp = Path(tempfile.mkdtemp(prefix="gw-prod-bench-"))
    bench = Bench(args, tmp, sys.executable)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the servers, drop the database
    try:
        run(bench)
    finally:
        bench.cleanup()
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def run(bench: Bench) -> None:
    args, tmp = bench.args, bench.tmp
    print(f"logs in {tmp}", flush=True)
    direct = bench.upstreams()
    bench.prepare_gateway()
    servers: list[Server] = [direct]
    if not args.only_gateway:
        servers.append(bench.forwarder())
        litellm = bench.litellm()
        if litellm is not None:
            servers.append(litellm)
    if args.compare:  # another source tree of the gateway, on the same database: before/after in one run
        servers.append(bench.gateway(2, name="compare", root=Path(args.compare).resolve()))
    gateway = bench.gateway(2)
    servers.append(gateway)
    if args.keep:
        print(f"gateway: {gateway.url('bench-json')} key {bench.key}; pids {gateway.pids()}", flush=True)
        if args.hold_streams:
            one = bench.gateway(1, name="gateway1")
            print(f"one-worker gateway: {one.url('bench-json')}; pids {one.pids()}", flush=True)
        try:
            input("Enter to stop... ")
        except EOFError:
            pass
        return

    for server in servers:  # warm up: connections pooled, caches filled, code paths run once
        wrk(server.url("bench-json"), server.body("bench-json"), server.headers, 8, 2, tmp)
        measure_ttft(server, 8, 1)
    time.sleep(2)
    idle = {s.name: s.rss() for s in servers}
    gateway_requests_before = _gateway_rows(bench)

    results: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}

    def note(server: Server, values: dict[str, float]) -> None:
        for k, v in values.items():
            results[server.name].setdefault(k, []).append(v)

    for round_no in range(args.rounds):
        order = servers[round_no % len(servers) :] + servers[: round_no % len(servers)]
        for label, measure in (
            ("c1", lambda s: {f"c1_{k}": v for k, v in measure_wrk(s, 1, args.duration, tmp).items()}),
            ("c64", lambda s: {f"c64_{k}": v for k, v in measure_wrk(s, 64, args.duration, tmp).items()}),
            ("ttft", lambda s: measure_ttft(s, args.streams, args.duration)),
        ):
            for server in order:
                values = measure(server)
                note(server, values)
                shown = ", ".join(f"{k}={v:.2f}" for k, v in values.items())
                print(f"round {round_no + 1} {label:>4} {server.name}: {shown}", flush=True)

    attribution = attribute_redis(bench, gateway, args)
    time.sleep(3)
    idle_after = {s.name: s.rss() for s in servers}
    served = sum(sum(results[gateway.name].get(k, [0])) for k in ("c1_requests", "c64_requests"))
    log_rows = _gateway_rows(bench) - gateway_requests_before
    health = json.loads(urllib.request.urlopen(gateway.health, timeout=5).read())  # type: ignore[attr-defined]

    log_rate = ""
    if args.log_rows:
        out = subprocess.run(
            [bench.python, "bench/prod_fixtures.py", "--log-rows", str(args.log_rows)],
            cwd=ROOT,
            env=bench.gateway_env(),
            capture_output=True,
            text=True,
        )
        log_rate = (out.stdout.strip().splitlines() or [out.stderr.strip()[-500:]])[-1]

    hold: dict[str, float] = {}
    if args.hold_streams:
        for s in servers[1:]:
            stop(s.proc)  # the one-worker gateway gets the machine to itself
        hold = hold_streams(bench, args.hold_streams)

    report(servers, results, idle, idle_after, direct, gateway, served, log_rows, health, hold, args)
    print(
        "\nThe same gateway with a key without limits (no Redis call on its path), back to back with the "
        f"benchmark's key, {args.rounds} rounds: " + ", ".join(f"{k} {v}" for k, v in attribution.items())
    )
    if log_rate:
        print(f"\nLog writer alone on PostgreSQL (bench/prod_fixtures.py --log-rows {args.log_rows}): {log_rate}")


def attribute_redis(bench: Bench, gateway: Server, args: argparse.Namespace) -> dict[str, str]:
    """c1 p50 and TTFT p50 of the benchmark's key (limits: two Redis calls per request) beside a key
    without limits on the same gateway, alternating: what the admission's round trip adds."""
    free = dataclasses.replace(
        gateway, name="gateway, key without limits", headers={"Authorization": f"Bearer {bench.unlimited_key}"}
    )
    got: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for label, server in (("limited", gateway), ("unlimited", free)):
            got.setdefault(f"{label} c1 p50", []).append(measure_wrk(server, 1, args.duration, bench.tmp)["p50"])
            ttft = measure_ttft(server, args.streams, args.duration)["ttft_p50"]
            got.setdefault(f"{label} TTFT p50", []).append(ttft)
    return {k: f"{median(v):.2f} ms" for k, v in got.items()}


def _gateway_rows(bench: Bench) -> int:
    url = f"{bench.args.pg_url.rstrip('/')}/{bench.db_name}"
    out = subprocess.run(
        ["psql", url, "-At", "-c", "SELECT count(*) FROM completions_requestlog"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip() or 0)


def hold_streams(bench: Bench, n: int) -> dict[str, float]:
    """`n` concurrent long streams on a one-worker gateway: errors and RSS per open stream."""
    server = bench.gateway(1, name="gateway1")
    body = server.body("bench-long", stream=True)
    headers = {"Content-Type": "application/json", **server.headers}
    asyncio.run(stream_client.ttft(server.url("bench-paced"), server.body("bench-paced", True), headers, 32, 2))
    time.sleep(1)
    (worker,) = server.workers()
    before = rss_mib(worker)
    peak: list[float] = []

    async def sample() -> None:
        for _ in range(10):
            peak.append(rss_mib(worker))
            await asyncio.sleep(0.2)

    started = time.monotonic()
    stats = asyncio.run(stream_client.hold(server.url("bench-long"), body, headers, n, sample))
    elapsed = time.monotonic() - started
    after = rss_mib(worker)
    stop(server.proc)
    return {
        "n": float(n),
        "ok": float(len(stats.ttft_ms)),
        "errors": float(stats.errors),
        "rss_before": before,
        "rss_peak": max(peak) if peak else float("nan"),
        "rss_after": after,
        "kib_per_stream": (max(peak) - before) * 1024 / n if peak else float("nan"),
        "ttft_p50": median(stats.ttft_ms),
        "seconds": elapsed,
        "samples": "; ".join(stats.error_samples),  # type: ignore[dict-item]
    }


def report(
    servers: list[Server],
    results: dict[str, dict[str, list[float]]],
    idle: dict[str, tuple[float, float]],
    idle_after: dict[str, tuple[float, float]],
    direct: Server,
    gateway: Server,
    served: float,
    log_rows: int,
    health: dict[str, Any],
    hold: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    base = results[direct.name]
    p50_0, p99_0, ttft_0 = median(base["c1_p50"]), median(base["c1_p99"]), median(base["ttft_p50"])
    print(f"\n{args.rounds} interleaved rounds, {args.duration:g} s per measurement; median (min-max) over rounds\n")
    print(
        "| | c1 req/s | added p50 @c1 (ms) | added p99 @c1 (ms) | c64 req/s | c64 p99 (ms) "
        "| added TTFT p50, 64 streams (ms) | CPU ms/req @c64 | idle RSS MiB (largest worker) | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        r = results[s.name]
        is_base = s is direct
        added = [v - p50_0 for v in r["c1_p50"]]
        added99 = [v - p99_0 for v in r["c1_p99"]]
        ttft = [v - ttft_0 for v in r["ttft_p50"]]
        errors = sum(sum(r.get(k, [0])) for k in ("c1_errors", "c64_errors", "stream_errors"))
        total, worker = idle[s.name]
        print(
            f"| {s.name} | {spread(r['c1_rps'], '.0f')} "
            f"| {'(p50 ' + spread(r['c1_p50'], '.2f') + ')' if is_base else spread(added, '+.2f')} "
            f"| {'(p99 ' + spread(r['c1_p99'], '.2f') + ')' if is_base else spread(added99, '+.2f')} "
            f"| {spread(r['c64_rps'], '.0f')} | {spread(r['c64_p99'], '.1f')} "
            f"| {'(p50 ' + spread(r['ttft_p50'], '.1f') + ')' if is_base else spread(ttft, '+.2f')} "
            f"| {spread(r['c64_cpu_ms'], '.2f')} | {total:.0f} ({worker:.0f}) | {errors:.0f} |"
        )
    gw = results[gateway.name]
    print("\nRatios within each round (gateway c64 req/s over the other's):")
    for s in servers[1:]:
        if s is gateway:
            continue
        ratios = [g / o for g, o in zip(gw["c64_rps"], results[s.name]["c64_rps"], strict=True) if o]
        print(f"- over {s.name}: {spread(ratios, '.3f')}")
    print("\nIdle RSS, MiB (whole tree / largest worker), before and after the rounds:")
    for s in servers:
        (t0, w0), (t1, w1) = idle[s.name], idle_after[s.name]
        print(f"- {s.name}: {t0:.0f}/{w0:.0f} -> {t1:.0f}/{w1:.0f}")
    print(
        f"\nRequest log: {served:.0f} wrk requests answered by the gateway in the rounds, {log_rows} rows written "
        f"(plus stream rows); backlog at the end {health.get('log_backlog')}, set aside {health.get('log_set_aside')}"
    )
    if hold:
        print(
            f"\n{hold['n']:.0f} concurrent streams on one worker: {hold['ok']:.0f} ended with [DONE], "
            f"{hold['errors']:.0f} errors, in {hold['seconds']:.1f} s; worker RSS {hold['rss_before']:.0f} MiB idle, "
            f"{hold['rss_peak']:.0f} MiB with all open ({hold['kib_per_stream']:.1f} KiB per open stream), "
            f"{hold['rss_after']:.0f} MiB after; TTFT p50 {hold['ttft_p50']:.1f} ms"
        )
        if hold.get("samples"):
            print(f"  errors: {hold['samples']}")


if __name__ == "__main__":
    main()
