# The gateway's image: the production command (gunicorn -c gunicorn.conf.py) as a non-root user.
# docker-compose.yml runs it three ways: `migrate` (once, before the gateways), `gateway`
# (scalable) and `retention`. CI runs the same commands without Docker (README, Deployment).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=compat_api.settings
WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home --shell /usr/sbin/nologin gateway

# .dockerignore keeps out the virtualenv, SQLite files, the demo key, any .env and the tests.
COPY . .
# collectstatic signs nothing; the settings only insist on a key being set (the real one comes at run time).
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0

# The code and static files stay root's: the gateway user can read them, not change them.
USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
