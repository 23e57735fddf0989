"""gunicorn settings for deployments: uvicorn workers serving the ASGI app (see docker-compose.yml)."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WORKERS", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
# Streams can last minutes; a worker is only killed when it stops answering gunicorn's heartbeat.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 75
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
