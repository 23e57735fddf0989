# `make run`: set up and serve the gateway (SQLite, mock model, demo key).
# `make test`: set up and run the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

.PHONY: run test lint install install-test install-node-clients migrate bench bench-prod clean

# The settings refuse to start without SECRET_KEY unless DEBUG is on (README, Security).
# `make run` is for this machine: DEBUG on, unless the environment says otherwise.
run migrate: export DEBUG ?= true
# A terminal reads plain lines better than JSON (deployments keep the default, json).
run: export LOG_FORMAT ?= plain
# The benchmark serves as a deployment does (DEBUG off), with a throwaway key.
bench: export SECRET_KEY ?= bench-only-$(shell $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

# The Node client libraries tests/clients drives (pinned by their lockfile). Needs node and npm:
# without them `make test` stops here rather than skip those tests.
NODE_CLIENTS := tests/clients/node
$(NODE_CLIENTS)/node_modules/.installed: $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs node and npm (Node 20+) for tests/clients/node" >&2; exit 1; }
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
# The Node client libraries' tests need Node 20 and npm; without npm they are skipped (CI requires them).
install-node-clients:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_CLIENTS)/node_modules/.installed; \
	else echo "npm not found: the Node client and CLI tests will be skipped (they run under .ci/run)"; fi

migrate: install
	$(BIN)/python manage.py migrate --noinput -v0

run: migrate
	@$(BIN)/python manage.py collectstatic --noinput -v0
	@KEY=$$($(BIN)/python manage.py demo_setup) && \
	  echo "" && \
	  echo "  Gateway:   http://$(HOST):$(PORT)/v1   (model: mock-gpt-model)" && \
	  echo "  Demo key:  $$KEY" && \
	  echo "  Admin:     http://$(HOST):$(PORT)/admin/  (create a login: $(BIN)/python manage.py createsuperuser)" && \
	  echo ""
	$(BIN)/uvicorn compat_api.asgi:application --host $(HOST) --port $(PORT) --workers $(WORKERS) --no-access-log

# pytest exits 5 when it collected no tests; make treats any non-zero exit as failure.
test: install-test install-node-clients
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint and format) and mypy, configured in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-test
	$(BIN)/python bench/gateway_bench.py $(BENCH_ARGS)

# The production path beside a raw forwarder and LiteLLM (docs/benchmarks.md): needs wrk, nginx,
# PostgreSQL and Redis on this machine, and LiteLLM in bench/.litellm-venv (or BENCH_ARGS=--no-litellm).
bench-prod: install-test
	$(BIN)/python bench/production_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3* .test-db.sqlite3* staticfiles .cache $(NODE_CLIENTS)/node_modules
