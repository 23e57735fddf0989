"""gunicorn settings of the production command, `gunicorn -c gunicorn.conf.py` (the image's CMD).

Every value comes from the environment (README, Deployment; .env.example lists them), with
defaults suited to long streams. This file also prepares what the workers share: the
directory where prometheus-client's multiprocess mode keeps each worker's metrics (so
`/metrics` adds up every worker), and the JSON logging of gunicorn's and uvicorn's own lines.
"""

import os
import shutil
import tempfile

wsgi_app = "compat_api.asgi:application"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WORKERS", "2"))
# uvicorn's worker with a bounded, row-keeping graceful shutdown (compat_api/worker.py).
worker_class = "compat_api.worker.GatewayWorker"
# A worker is killed only when its event loop stops answering gunicorn's heartbeat for this long;
# a stream may last far longer (uvicorn workers notify gunicorn whatever requests they serve).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On SIGTERM: stop accepting, let in-flight requests and streams run this long (less the
# shutdown reserve, spent writing the request log), then stop. Orchestrators must wait longer
# than this before they kill (compose: stop_grace_period).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "60"))
# Longer than the idle timeout of the proxy or load balancer in front (nginx 60 s, AWS ALB 60 s),
# so the gateway never closes a connection the proxy is about to reuse.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# gunicorn's control socket (gunicornc) sits at one path per user: several servers on a machine
# would take each other's. Off unless GUNICORN_CONTROL_SOCKET names a path of this server's own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "/nonexistent/gunicorn.ctl"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# prometheus-client's multiprocess mode: one directory per server, emptied at start (values of
# an earlier run must not be added to this one's). Set before any worker imports the client.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_own_metrics_dir = not _metrics_dir
if _own_metrics_dir:
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")


def on_starting(server):
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        path = os.path.join(_metrics_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def child_exit(server, worker):
    # A dead worker's gauges (in-flight streams, log backlog) stop counting; its counters stay.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


# gunicorn's and uvicorn's own lines in the gateway's format (LOG_FORMAT: json or plain), on stdout.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"gateway": {"()": "completions.logs.make_formatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "gateway", "stream": "ext://sys.stdout"}},
    "root": {"level": loglevel.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"] if accesslog else [], "propagate": False},
    },
}
