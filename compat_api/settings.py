"""Django settings for the gateway, read from the environment (and an optional `.env`)."""

import ipaddress
import logging
import os
import re
import secrets
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# No default key outside development: with DEBUG off and no SECRET_KEY the process refuses to
# start. The test suite, which runs with DEBUG off, makes a random key of its own and hands it on
# to the servers it starts in subprocesses.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "django-insecure-development-only-" + "x" * 24
    elif "pytest" in sys.modules:
        SECRET_KEY = os.environ["SECRET_KEY"] = "test-only-" + secrets.token_urlsafe(40)
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off: the gateway will not start with a known key. Set "
            "SECRET_KEY in the environment or in .env (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`), or DEBUG=true on a development machine."
        )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """`HTTP_X_FORWARDED_PROTO,https` (or `X-Forwarded-Proto,https`) as Django's (META key, value)."""
    if not value:
        return None
    name, _, expected = (part.strip() for part in value.partition(","))
    if not name or not expected:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. 'HTTP_X_FORWARDED_PROTO,https'; got {value!r}."
        )
    name = name.upper().replace("-", "_")
    return (name if name.startswith("HTTP_") else "HTTP_" + name), expected


# HTTPS (README, Security): all off by default so plain-HTTP development works; the documented
# production environment turns them on, and `manage.py check --deploy` is then clean.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
# Behind a proxy that terminates TLS: the header (and value) it sets on HTTPS requests. Only set
# this if the proxy always sets or strips that header, or clients could claim HTTPS.
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env.str("SECURE_PROXY_SSL_HEADER", default=""))

INSTALLED_APPS = [
    "completions",  # first: its admin templates extend Django's
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

# Middleware for the admin and the management API (the stock Django handler).
# The OpenAI-compatible endpoints run on `completions.handler.GatewayASGIHandler`,
# which uses GATEWAY_MIDDLEWARE instead: plain async callables, no thread hops.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "completions.middleware.request_id_middleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]
GATEWAY_MIDDLEWARE = ["completions.middleware.request_id_middleware"]

# Logins (the admin's) go through django-axes first: after AXES_FAILURE_LIMIT failed logins the
# lockout parameters (default: that username from that IP address) are refused for the cool-off.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "compat_api.urls"
ASGI_APPLICATION = "compat_api.asgi.application"
WSGI_APPLICATION = "compat_api.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
# Connections are kept (the gateway's DB work runs on long-lived threads) and
# checked for health before reuse.
_db.setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=300))
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the admin read while the request-log writer writes; IMMEDIATE
    # transactions plus a busy timeout make concurrent writers wait, not fail.
    _db.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # Tests use a file, not memory: the test server's threads and worker processes share it.
    # One per test run (by pid), so parallel runs don't collide; Django deletes it afterwards.
    _db["TEST"] = {
        "NAME": env.str(
            "SQLITE_TEST_NAME", default=str(Path(tempfile.gettempdir()) / f"gateway-test-{os.getpid()}.sqlite3")
        )
    }
elif _db["ENGINE"].startswith("django.db.backends.postgresql"):
    # A database host that stops answering fails a connection attempt after this many seconds
    # (psycopg's default is to wait forever, holding the thread every ORM call goes through).
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=3))

REDIS_URL = env.str("REDIS_URL", default="")
# Seconds a Redis call may take (connecting, or answering) before Redis counts as unreachable.
GATEWAY_REDIS_TIMEOUT = env.float("GATEWAY_REDIS_TIMEOUT", default=1.0)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="gw"),
            "OPTIONS": {"socket_connect_timeout": GATEWAY_REDIS_TIMEOUT, "socket_timeout": GATEWAY_REDIS_TIMEOUT},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---- Brute-force protection (README, Security) -----------------------------------------------
AXES_LOCKOUT_CHOICES = {"username", "ip_address", "user_agent"}


def _lockout_parameters(value: str) -> list[str | list[str]]:
    """`username+ip_address` (locked together), or a comma list of such: axes' AXES_LOCKOUT_PARAMETERS."""
    out: list[str | list[str]] = []
    for item in (part.strip() for part in value.split(",") if part.strip()):
        names = [name.strip() for name in item.split("+")]
        if not set(names) <= AXES_LOCKOUT_CHOICES:
            raise ImproperlyConfigured(
                f"AXES_LOCKOUT_PARAMETERS: {item!r} is not one of {sorted(AXES_LOCKOUT_CHOICES)} joined by '+'."
            )
        out.append(names if len(names) > 1 else names[0])
    if not out:
        raise ImproperlyConfigured("AXES_LOCKOUT_PARAMETERS must name at least one parameter.")
    return out


AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = _lockout_parameters(env.str("AXES_LOCKOUT_PARAMETERS", default="username+ip_address"))
AXES_RESET_ON_SUCCESS = True  # a successful login forgets the earlier failures


def _throttle_rate(name: str, default: str) -> str:
    """A DRF rate (`60/minute`, `5/s`, …), checked here rather than failing on the first request."""
    rate = env.str(name, default=default)
    if not re.fullmatch(r"[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)", rate.strip()):
        raise ImproperlyConfigured(f"{name} must be a rate like '60/minute' (per s, m, h or d); got {rate!r}.")
    return rate.strip()


REST_FRAMEWORK = {
    # Token first: its scheme is what a 401's WWW-Authenticate names (a session can't be asked for).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "completions.api.authentication.ManagementTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Per signed-in user; anonymous callers (and wrong tokens) meet the anon rate, checked by
    # completions.api.throttling before permissions answer 401 (see there).
    "DEFAULT_THROTTLE_CLASSES": ["completions.api.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _throttle_rate("API_THROTTLE_ANON", "60/minute"),
        "user": _throttle_rate("API_THROTTLE_USER", "1200/minute"),
    },
    # How many proxies in front of the gateway append to X-Forwarded-For; 0: the client's address
    # is the connection's (a client-sent X-Forwarded-For can't pick its own throttle bucket).
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "completions.api.exceptions.envelope_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM gateway management API",
    "DESCRIPTION": "Keys, usage and request logs of the OpenAI-compatible gateway.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the vendored sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Logs (README, Operations): one JSON object per line on stdout (LOG_FORMAT=json, the default),
# or `time level logger message key=value` lines (plain, for a terminal); one line per request
# from the `gateway.request` logger at INFO (LOG_LEVEL=WARNING drops them). Lines are written by
# a thread of their own, never on the event loop.
LOG_FORMAT = env.str("LOG_FORMAT", default="json").strip().lower()
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain; got {LOG_FORMAT!r}.")
os.environ["LOG_FORMAT"] = LOG_FORMAT  # the formatter (completions.logs, no Django) reads it there
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
logging.captureWarnings(True)  # Python warnings become log lines in the same format
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"gateway": {"()": "completions.logs.make_formatter"}},
    "handlers": {"stdout": {"class": "completions.logs.BackgroundStreamHandler", "formatter": "gateway"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    # Provider SDKs log every upstream request at INFO through httpx/httpx2: too chatty for a gateway.
    "loggers": {
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}

# ---- Gateway settings -------------------------------------------------------
# Largest request body accepted, in bytes; larger ones are a 413.
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# Store prompt and response text in the request log (off: only counts and metadata).
GATEWAY_LOG_CONTENT = env.bool("GATEWAY_LOG_CONTENT", default=False)
# The request log's spool: every finished request's row is appended to a file here within
# GATEWAY_LOG_FLUSH_SECONDS, and what the database has not taken when a process stops (or dies)
# is written by the next one to start. A local directory, kept across restarts (a volume).
GATEWAY_LOG_SPOOL_DIR = env.str("GATEWAY_LOG_SPOOL_DIR", default=str(BASE_DIR / "var" / "spool"))
GATEWAY_LOG_FLUSH_SECONDS = env.float("GATEWAY_LOG_FLUSH_SECONDS", default=0.1)
# Bounds on one embeddings request's answer, checked before any work (400 naming the parameter).
GATEWAY_MAX_EMBEDDING_DIMENSIONS = env.int("GATEWAY_MAX_EMBEDDING_DIMENSIONS", default=3072)
GATEWAY_MAX_EMBEDDING_VALUES = env.int("GATEWAY_MAX_EMBEDDING_VALUES", default=1_048_576)
# Seconds an API key lookup is trusted in process before asking the shared cache.
GATEWAY_KEY_CACHE_SECONDS = env.float("GATEWAY_KEY_CACHE_SECONDS", default=5.0)
# While the database can't be reached, a key's last known state (in process or in the shared
# cache) is used for up to this many seconds after it was read from the database.
GATEWAY_KEY_STALE_SECONDS = env.float("GATEWAY_KEY_STALE_SECONDS", default=3600.0)
# After a failed call to Redis or the database, each worker skips it for this many seconds,
# then lets one call probe it again.
GATEWAY_DEPENDENCY_RETRY_SECONDS = env.float("GATEWAY_DEPENDENCY_RETRY_SECONDS", default=2.0)
# Worker processes sharing the limits (all machines together): while Redis is unreachable, each
# worker enforces 1/GATEWAY_WORKERS of every rate limit and of what is left of every budget.
GATEWAY_WORKERS = env.int("GATEWAY_WORKERS", default=env.int("WORKERS", default=1))
# Request-log rows a worker may hold while the database is slow or down; /readyz fails beyond.
GATEWAY_LOG_MAX_PENDING = env.int("GATEWAY_LOG_MAX_PENDING", default=200_000)
# Seconds between checks of the shared route-table version.
GATEWAY_ROUTE_CHECK_SECONDS = env.float("GATEWAY_ROUTE_CHECK_SECONDS", default=2.0)
# How long the gateway keeps the state providers attach to tool calls (Gemini thought signatures,
# Anthropic thinking blocks) for clients that don't send it back (completions/tool_state.py).
GATEWAY_TOOL_STATE_SECONDS = env.int("GATEWAY_TOOL_STATE_SECONDS", default=3600)
# The offline mock model, always routed.
GATEWAY_MOCK_MODEL = env.str("GATEWAY_MOCK_MODEL", default="mock-gpt-model")
# Namespace of the gateway's own keys in Redis (limits, budgets).
GATEWAY_REDIS_PREFIX = env.str("GATEWAY_REDIS_PREFIX", default="gw")
# Failover: retry backoff base (seconds, doubled per retry, full jitter), the longest upstream
# Retry-After the gateway waits out before moving on, and the per-route circuit breaker.
GATEWAY_RETRY_BASE_SECONDS = env.float("GATEWAY_RETRY_BASE_SECONDS", default=0.25)
GATEWAY_MAX_RETRY_AFTER = env.float("GATEWAY_MAX_RETRY_AFTER", default=5.0)
GATEWAY_BREAKER_FAILURES = env.int("GATEWAY_BREAKER_FAILURES", default=5)
GATEWAY_BREAKER_COOLDOWN = env.float("GATEWAY_BREAKER_COOLDOWN", default=30.0)
# When every route of a model is avoided (open breaker or an upstream's 429), still try the one
# that failed least recently, once, instead of refusing everyone with 503 circuit_open.
GATEWAY_BREAKER_PANIC = env.bool("GATEWAY_BREAKER_PANIC", default=True)
# Whether users who aren't staff may create their own API keys through /api/keys/ (the keys get
# at most the limits staff gave the user; README, Security). Off: only staff create keys.
GATEWAY_USERS_CREATE_KEYS = env.bool("GATEWAY_USERS_CREATE_KEYS", default=True)
# Add `x-gateway-worker: <pid>` to responses (to see how requests spread over workers).
GATEWAY_DEBUG_HEADERS = env.bool("GATEWAY_DEBUG_HEADERS", default=False)
# Responses API: how long responses kept with `store: true` stay retrievable (0 = until deleted).
GATEWAY_RESPONSES_RETENTION_DAYS = env.float("GATEWAY_RESPONSES_RETENTION_DAYS", default=30)

# ---- Operations (README, Operations) ---------------------------------------------------------
# /metrics answers connections from these networks, or any connection with
# `Authorization: Bearer <GATEWAY_METRICS_TOKEN>` (when set).
GATEWAY_METRICS_TOKEN = env.str("GATEWAY_METRICS_TOKEN", default="")
GATEWAY_METRICS_NETWORKS = [
    n.strip() for n in env.list("GATEWAY_METRICS_NETWORKS", default=["127.0.0.1/32", "::1/128"]) if n.strip()
]
for _network in GATEWAY_METRICS_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"GATEWAY_METRICS_NETWORKS: {_network!r} is not a network (e.g. 10.0.0.0/8 or 127.0.0.1/32)."
        ) from None
# Retention (`manage.py prune_logs`): request-log rows (and set-aside rows) older than this many
# days are deleted, in batches, by the `retention` compose service or a cron job; 0 keeps them
# forever. The daily roll-ups, which the dashboard, /api/usage/ and the budgets read, are kept.
GATEWAY_LOG_RETENTION_DAYS = env.int("GATEWAY_LOG_RETENTION_DAYS", default=90)
# Stored responses have their own retention, GATEWAY_RESPONSES_RETENTION_DAYS (above); prune_logs
# deletes them once expired, as `manage.py purge_responses` does.
