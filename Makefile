# Two commands matter: `make run` starts the gateway, `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench check-config redis-server wrk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamps re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test]"
	@touch $@

$(VENV)/.installed-lint: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test,lint]"
	@touch $@

run: $(VENV)/.installed
	$(BIN)/gateway serve --config config/gateway.yaml --host 127.0.0.1 --port 8080

# Tests start their own redis-server processes on free ports: make sure the binary exists.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server from Debian's packages"; \
	    (apt-get install -y -q redis-server >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null)); \
	  else echo "redis-server is missing: install it (e.g. apt-get install redis-server)" >&2; exit 1; fi; }

test: $(VENV)/.installed-test redis-server
	$(BIN)/pytest

# Benchmarks print figures; they are never pass/fail. wrk comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); \
	  else echo "wrk is missing: the benchmark falls back to its asyncio load generator" >&2; fi; }

bench: $(VENV)/.installed-test redis-server wrk
	$(BIN)/python -m tests.bench.run

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-config: $(VENV)/.installed
	$(BIN)/gateway check-config config/gateway.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
