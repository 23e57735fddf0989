"""Django settings for the gateway, read from the environment (and an optional `.env`)."""

import os
import tempfile
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-dev-key-change-me-" + "x" * 24)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "completions",  # first: its admin templates extend Django's
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
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
]
GATEWAY_MIDDLEWARE = ["completions.middleware.request_id_middleware"]

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

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="gw"),
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

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
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
# Seconds between checks of the shared route-table version.
GATEWAY_ROUTE_CHECK_SECONDS = env.float("GATEWAY_ROUTE_CHECK_SECONDS", default=2.0)
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
# Add `x-gateway-worker: <pid>` to responses (to see how requests spread over workers).
GATEWAY_DEBUG_HEADERS = env.bool("GATEWAY_DEBUG_HEADERS", default=False)
