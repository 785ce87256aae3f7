# Two commands matter: `make run` starts the gateway, `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test soak lint audit lock image-lock docs bench bench-compare check-config redis-server chromium wrk nginx profile clean

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

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[docs]"
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

# The status page's test drives Debian's chromium through Playwright (which cannot download browsers here).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium from Debian's packages"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); \
	  else echo "/usr/bin/chromium is missing: install it (e.g. apt-get install chromium)" >&2; exit 1; fi; }

test: $(VENV)/.installed-test redis-server chromium nginx
	$(BIN)/pytest

# Steady mixed load with injected faults for a few minutes; fails if RSS, fds or tasks grow or errors
# exceed 1% (a 20 s version runs in `make test`). SOAK_S sets the measured seconds.
SOAK_S ?= 180
soak: $(VENV)/.installed-test redis-server
	$(BIN)/python -m tests.soak --duration $(SOAK_S)

# Benchmarks print figures; they are never pass/fail. wrk comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); \
	  else echo "wrk is missing: the benchmark falls back to its asyncio load generator" >&2; fi; }

# nginx is the benchmarks' anchor row: a plain reverse proxy in C on the gateway's core, run by the
# benchmark from a temporary prefix with its own configuration (tests/bench/nginx.py), never as a service.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx from Debian's packages"; \
	    (apt-get install -y -q nginx >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null)); \
	  else echo "nginx is missing: install it (e.g. apt-get install nginx); the benchmarks' anchor row needs it" >&2; exit 1; fi; }

bench: $(VENV)/.installed-test redis-server wrk nginx
	$(BIN)/python -m tests.bench.run

# LiteLLM, pinned, in its own virtualenv. Never 1.82.7 or 1.82.8 (malicious releases). The 1.106.x
# patch releases after .0 need a certifi newer than some package mirrors carry, so .0 it is.
LITELLM_VERSION := 1.106.0
.bench/litellm-venv/.installed-$(LITELLM_VERSION):
	$(PYTHON) -m venv .bench/litellm-venv
	.bench/litellm-venv/bin/python -m pip --disable-pip-version-check -q install "litellm[proxy]==$(LITELLM_VERSION)"
	@touch $@

# The Portkey gateway (Node), pinned, from npm into .bench/portkey; a failed install is a note, not an error
# (bench-compare then prints that the row was skipped).
PORTKEY_VERSION := 1.15.2
.bench/portkey/.installed-$(PORTKEY_VERSION):
	@mkdir -p .bench/portkey
	@cd .bench/portkey && { timeout 300 npm install --no-audit --no-fund --silent \
	  "@portkey-ai/gateway@$(PORTKEY_VERSION)" >/dev/null 2>&1 && touch .installed-$(PORTKEY_VERSION); } || \
	  echo "note: the Portkey gateway did not install from npm; bench-compare skips its row" >&2

bench-compare: $(VENV)/.installed-test redis-server wrk nginx .bench/litellm-venv/.installed-$(LITELLM_VERSION) \
  .bench/portkey/.installed-$(PORTKEY_VERSION)
	$(BIN)/python -m tests.bench.compare

# Flame graphs of the gateway under load (py-spy, into .venv for this target only) in .artifacts/
# (kept out of git), plus the functions with the most self time. PROFILE_S sets the sampled seconds.
PROFILE_S ?= 15
$(VENV)/.installed-py-spy: | $(BIN)/python
	$(PIP) install py-spy
	@touch $@

profile: $(VENV)/.installed-test $(VENV)/.installed-py-spy redis-server wrk
	$(BIN)/python -m tests.bench.profile --duration $(PROFILE_S)

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@$(MAKE) --no-print-directory audit

# Known vulnerabilities in the locked dependencies (requirements.lock, written by `make lock`).
# pip-audit --strict with PIP_AUDIT_SERVICE (pypi: PyPI's per-version JSON, or osv: OSV_URL) when that
# service answers; where it does not (mirrors often serve only PyPI's per-project JSON), .ci/audit.py
# checks each package against its newest release's known vulnerabilities and prints what it covered.
# PIP_AUDIT=off skips it, loudly. AUDIT_REQUIRED=1 fails when nothing at all could be audited.
PIP_AUDIT ?= on
PIP_AUDIT_SERVICE ?= pypi
OSV_URL ?= https://api.osv.dev/v1/query
audit: $(VENV)/.installed-lint
ifeq ($(PIP_AUDIT),off)
	@echo "*** PIP_AUDIT=off: the locked dependencies were NOT audited for known vulnerabilities ***" >&2
else
	$(BIN)/python .ci/audit.py requirements.lock $(BIN)/pip-audit $(PIP_AUDIT_SERVICE) $(OSV_URL)
endif

# requirements.lock: the exact versions the project and every extra resolve to today, from a fresh
# virtualenv (so nothing installed by hand slips in). Re-run after changing pyproject.toml; commit it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip --disable-pip-version-check -q install --upgrade pip
	.lock-venv/bin/python -m pip --disable-pip-version-check -q install -e ".[otel,test,lint,docs]"
	{ echo "# Exact versions of llm-gateway's dependencies with all extras (otel, test, lint, docs)."; \
	  echo "# Written by \`make lock\` ($$(.lock-venv/bin/python --version)); audited by \`make audit\`."; \
	  .lock-venv/bin/python -m pip --disable-pip-version-check freeze --exclude-editable --all \
	    | grep -v -E '^(pip|setuptools|wheel)=='; } > requirements.lock
	rm -rf .lock-venv
	@$(MAKE) --no-print-directory image-lock

# deploy/requirements.hashes.txt: the image's runtime dependencies at requirements.lock's versions, each
# with the sha256 of its amd64 and arm64 wheels, for `pip install --require-hashes` in deploy/Dockerfile.
# Written by `make lock` too; tests/deploy checks it matches requirements.lock and pyproject.toml.
image-lock: $(VENV)/.installed
	$(BIN)/python .ci/image_lock.py $(BIN)/python requirements.lock deploy/requirements.hashes.txt

# The documentation site (mkdocs.yml, docs/) into site/, strict: a broken link or anchor fails. The
# configuration reference and config/gateway.schema.json are generated from the config types first;
# under CI (CI=true) they are only checked, so a stale committed copy fails.
docs: $(VENV)/.installed-docs
	$(BIN)/python -m gateway.config_reference $(if $(filter true,$(CI)),--check)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

check-config: $(VENV)/.installed
	$(BIN)/gateway check-config config/gateway.yaml

clean:
	rm -rf $(VENV) .lock-venv .pytest_cache .mypy_cache .ruff_cache site
