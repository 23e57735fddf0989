"""Issue 9, finding 10: no development key outside development, and a production environment
(as README's Security section documents it) for which `manage.py check --deploy` is clean.

Each check runs manage.py in a subprocess with exactly the environment given, as a deployment
would start it (the test process itself has its own settings loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# README, Security: the production environment.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "kP3v9-Jq2xTzR8wLmN4bYc7HdF1sGaE6uV0oQiWnZyXj5tBr-MkAeCp",
    "ALLOWED_HOSTS": "gateway.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://gateway.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def manage(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "compat_api.settings",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_in(tmp_path: Path, env: dict[str, str], *names: str) -> dict[str, Any]:
    code = "import json; from django.conf import settings as s; "
    code += f"print(json.dumps({{n: getattr(s, n) for n in {names!r}}}))"
    done = manage(tmp_path, env, "shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("check",), ("migrate", "--noinput")])
def test_without_secret_key_and_debug_off_nothing_starts(tmp_path: Path, argv: tuple[str, ...]) -> None:
    done = manage(tmp_path, {"DEBUG": "false"}, *argv)
    assert done.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set and DEBUG is off" in done.stderr


def test_the_asgi_server_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import compat_api.asgi"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "SECRET_KEY is not set" in done.stderr


def test_debug_on_runs_with_the_development_key(tmp_path: Path) -> None:
    """`make run` sets DEBUG=true, so a fresh checkout still starts with no configuration."""
    got = settings_in(tmp_path, {"DEBUG": "true"}, "SECRET_KEY", "DEBUG")
    assert got["DEBUG"] is True and got["SECRET_KEY"].startswith("django-insecure-")


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path: Path) -> None:
    done = manage(tmp_path, PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_each_production_setting_is_what_silences_its_warning(tmp_path: Path) -> None:
    """Without the HTTPS settings, check --deploy names each problem (so the clean run above means something)."""
    insecure = {
        k: v
        for k, v in PRODUCTION.items()
        if not k.startswith(("SECURE_", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"))
    }
    done = manage(tmp_path, insecure, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in done.stderr


def test_https_settings_come_from_the_environment(tmp_path: Path) -> None:
    names = (
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert settings_in(tmp_path, PRODUCTION, *names) == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }
    # The header may also be given as it is sent; defaults are off, for plain-HTTP development.
    proxy = settings_in(tmp_path, {"DEBUG": "true", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto, https"}, *names)
    assert proxy["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert not any(proxy[n] for n in names if n != "SECURE_PROXY_SSL_HEADER")


def test_a_malformed_proxy_header_setting_is_refused(tmp_path: Path) -> None:
    done = manage(tmp_path, {"DEBUG": "true", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "check")
    assert done.returncode != 0 and "SECURE_PROXY_SSL_HEADER must be 'HEADER,value'" in done.stderr


def test_brute_force_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "DEBUG": "true",
        "AXES_FAILURE_LIMIT": "8",
        "AXES_COOLOFF_MINUTES": "2.5",
        "AXES_LOCKOUT_PARAMETERS": "username, ip_address+user_agent",
        "API_THROTTLE_ANON": "10/minute",
        "API_THROTTLE_USER": "100/hour",
        "API_NUM_PROXIES": "1",
    }
    code = (
        "import json; from django.conf import settings as s; print(json.dumps([s.AXES_FAILURE_LIMIT, "
        "s.AXES_COOLOFF_TIME.total_seconds(), s.AXES_LOCKOUT_PARAMETERS, s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], "
        "s.REST_FRAMEWORK['NUM_PROXIES']]))"
    )
    done = manage(tmp_path, env, "shell", "-c", code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        8,
        150.0,
        ["username", ["ip_address", "user_agent"]],
        {"anon": "10/minute", "user": "100/hour"},
        1,
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("AXES_LOCKOUT_PARAMETERS", "username+password"), ("API_THROTTLE_USER", "lots"), ("API_THROTTLE_ANON", "5/week")],
)
def test_malformed_brute_force_settings_are_refused(tmp_path: Path, name: str, value: str) -> None:
    done = manage(tmp_path, {"DEBUG": "true", name: value}, "check")
    assert done.returncode != 0 and f"ImproperlyConfigured: {name}" in done.stderr
