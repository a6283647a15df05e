# AIM Console — quick start: `make demo` (run the console) and `make test` (run the suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench browser-deps observability-deps clean

install: $(STAMP)

# Re-install when the pinned dependencies change.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "AIM Console needs Python 3.11 (found " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/python manage.py demo

test: install browser-deps observability-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Import direction (import-linter contracts in pyproject.toml), ruff and mypy: all must be clean.
lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy

# Browser tests drive Debian's Chromium through Playwright (no downloaded browsers).
browser-deps:
	@test -x "$${AIM_CHROMIUM:-/usr/bin/chromium}" || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# Observability tests run Debian's Prometheus and promtool (package prometheus).
observability-deps:
	@{ test -x "$${AIM_PROMETHEUS:-/usr/bin/prometheus}" && test -x "$${AIM_PROMTOOL:-/usr/bin/promtool}"; } || { \
	  echo "Installing Debian's prometheus (prometheus + promtool) for the observability tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; }

bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
