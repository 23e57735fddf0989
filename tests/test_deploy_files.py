"""docker-compose.yml, the Dockerfile, .dockerignore, .env.example and the nginx template say what
CI runs without Docker (tests/deployment.py, tests/test_production_e2e.py).

No Docker engine runs here, so these read the files: the image's CMD is the production command
the tests start, the `migrate` service's command is the one they run, the healthchecks probe the
paths the gateway answers, and every variable the code reads is documented in .env.example.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deployment import NGINX_TEMPLATE, ROOT, compose, dockerfile_instructions, image_command, render_template
from tests.processes import PRODUCTION_COMMAND

# Variables read only by the test suite or CI, not by a deployment.
TEST_ONLY = {"SQLITE_TEST_NAME", "DJANGO_SETTINGS_MODULE"}


def test_the_image_runs_the_production_command_the_tests_start() -> None:
    assert image_command() == PRODUCTION_COMMAND == ["gunicorn", "-c", "gunicorn.conf.py"]
    conf = (ROOT / "gunicorn.conf.py").read_text()
    assert 'wsgi_app = "compat_api.asgi:application"' in conf
    for name in ("WORKERS", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_KEEPALIVE"):
        assert f'os.environ.get("{name}"' in conf, name


def test_the_image_is_slim_non_root_with_dependencies_in_their_own_layer() -> None:
    steps = dockerfile_instructions()
    words = [word for word, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [rest for word, rest in steps if word == "COPY"]
    assert copies == ["requirements.txt .", ". ."]
    install = words.index("RUN", words.index("COPY"))
    assert "pip install -r requirements.txt" in steps[install][1]
    assert install < next(i for i, (w, r) in enumerate(steps) if w == "COPY" and r == ". .")
    assert any(w == "RUN" and "collectstatic" in r for w, r in steps)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert max(i for i, w in enumerate(words) if w == "RUN") < words.index("USER") < words.index("CMD")
    healthcheck = next(rest for word, rest in steps if word == "HEALTHCHECK")
    assert "http://127.0.0.1:8000/readyz" in healthcheck


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", "db.sqlite3*", ".demo-key", ".env", ".env.*", ".git", "staticfiles", "tests"):
        assert entry in ignored, entry
    assert "!.env.example" in ignored


def test_compose_services_are_the_documented_ones() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "redis", "migrate", "gateway", "retention", "proxy"}
    db, redis = services["db"], services["redis"]
    assert db["image"] == "postgres:16" and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in compose()["volumes"]
    assert redis["image"] == "redis:7" and redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name, svc in services.items():
        if name != "proxy":
            assert "ports" not in svc, f"{name} publishes a port: only the proxy may"
    assert services["proxy"]["ports"] == ["${GATEWAY_PORT:-8000}:8080"]


def test_only_the_migrate_service_migrates_and_gateways_wait_for_it() -> None:
    services = compose()["services"]
    migrate, gateway = services["migrate"], services["gateway"]
    assert migrate["command"] == ["python", "manage.py", "deploy_setup"]  # what test_deploy_setup runs
    assert migrate["restart"] == "no"
    assert "command" not in gateway  # the image's CMD: the production command, which never migrates
    assert gateway["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert "migrate" not in " ".join(image_command())
    assert gateway["expose"] == ["8000"]
    assert gateway["healthcheck"]["test"][-1].count("http://127.0.0.1:8000/readyz") == 1
    # stop_grace_period must exceed gunicorn's graceful timeout, or Docker kills the streams (and rows)
    assert int(gateway["stop_grace_period"].rstrip("s")) > 60
    assert services["retention"]["command"][:3] == ["python", "manage.py", "prune_logs"]


def test_gateway_containers_get_the_whole_env_file_and_the_service_addresses() -> None:
    for name in ("migrate", "gateway", "retention"):
        svc = compose()["services"][name]
        assert svc["env_file"] == ".env"  # every variable of .env, provider base URLs included
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgres://gateway:${POSTGRES_PASSWORD:?")
        assert env["DATABASE_URL"].endswith("@db:5432/gateway")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
        assert env["API_NUM_PROXIES"] == "1"
        assert "./config:/app/config:ro" in svc["volumes"]
    example = env_example()
    for name in ("OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "ANTHROPIC_BASE_URL"):
        assert name in example


def test_the_proxy_uses_the_template_ci_renders_and_probes_readiness() -> None:
    proxy = compose()["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx.conf.template:/etc/nginx/templates/default.conf.template:ro" in proxy["volumes"]
    assert proxy["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert "http://127.0.0.1:8080/readyz" in proxy["healthcheck"]["test"]
    env = {k: compose_default(str(v)) for k, v in proxy["environment"].items()}
    assert env["NGINX_PORT"] == "8080" and env["NGINX_UPSTREAM_SERVERS"] == "server gateway:8000 resolve;"
    rendered = render_template(NGINX_TEMPLATE.read_text(), env)
    assert "${NGINX_" not in rendered
    assert "listen 8080;" in rendered and "server gateway:8000 resolve;" in rendered
    assert "proxy_pass http://gateway;" in rendered
    assert re.search(r"location = /metrics \{\s*return 404;", rendered)
    assert "client_max_body_size 17m;" in rendered
    assert "$http_host" in rendered and "$proxy_add_x_forwarded_for" in rendered  # nginx's own, left alone


def compose_default(value: str) -> str:
    """A compose value with each `${NAME:-default}` as its default (what an empty .env gives)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", lambda m: m.group(1), value)


def env_example() -> dict[str, str]:
    """Each variable .env.example documents (set, or commented out as `# NAME=`), with its value."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def variables_read() -> set[str]:
    """Every environment variable the gateway's code, its server config and compose read."""
    names: set[str] = set()
    pattern = re.compile(r"""(?:environ(?:\.get)?[\[(]|getenv\(|env\.[a-z]+\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    files = [*ROOT.glob("completions/**/*.py"), *ROOT.glob("compat_api/*.py"), ROOT / "gunicorn.conf.py"]
    for path in files:
        if "migrations" not in path.parts:
            names |= set(pattern.findall(path.read_text()))
    names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    routing = (ROOT / "completions" / "routing.py").read_text()
    names |= set(re.findall(r'^\s*"([A-Z][A-Z0-9_]*_API_KEY)",$', routing, re.M))  # the built-in routes' keys
    return names - TEST_ONLY


def test_env_example_documents_every_variable_with_a_safe_default() -> None:
    documented = env_example()
    missing = variables_read() - set(documented)
    assert not missing, f"not in .env.example: {sorted(missing)}"
    assert {"DATABASE_URL", "REDIS_URL"} <= set(documented)  # documented for managed services
    # No secret ships: the required ones are empty (compose and the settings refuse to start without them).
    assert documented["SECRET_KEY"] == "" and documented["POSTGRES_PASSWORD"] == ""
    assert documented["DEBUG"] == "false" and documented["GATEWAY_LOG_CONTENT"] == "false"
    for name, value in documented.items():
        if name.endswith(("_API_KEY", "_TOKEN", "_PASSWORD")):
            assert value == "", f"{name} has a value in .env.example"


@pytest.mark.parametrize("name", ["README.md"])
def test_the_readme_walkthrough_uses_the_files_as_they_are(name: str) -> None:
    readme = (ROOT / name).read_text()
    for step in (
        "cp .env.example .env",
        "docker compose up -d --build",
        "docker compose up -d --scale gateway=3",
        "docker compose exec gateway python manage.py create_api_key",
        "/v1/chat/completions",
        "/admin/",
        "/metrics",
        "/readyz",
        "GATEWAY_LOG_RETENTION_DAYS",
    ):
        assert step in readme, step
    assert Path(ROOT / "deploy" / "nginx.conf.template").exists()
