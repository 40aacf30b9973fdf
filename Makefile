# DeepTalk: `make run` (whole pipeline, tiny profile, ends with a served and tested model), `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-stamp
APT_PACKAGES := espeak-ng flite bsdgames wamerican chromium
# PREFECT_HOME (.prefect), telemetry off, offline hubs, TORCH_EXTENSIONS_DIR: defaults in the code
# (deeptalk/environment.py), so `python -m deeptalk …` outside make behaves the same. The test suite trains with
# DeepSpeed in-process (no entry point applies the defaults): its CPU ops stay built in the venv.
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions

.PHONY: setup system-deps run test test-fast test-container container bench gpu-smoke ui clean

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(PY) -m flows run --profile tiny

# Two pytest-xdist workers (each test runs on one torch thread), a test file per unit of work: tests/conftest.py.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The service image of a packaged model (default deeptalk:latest, stored by `make run`; MODEL=deeptalk:<version>
# for another): podman here (installed with apt when missing), Docker where its daemon runs. README "The service
# as a container".
container: setup
	PY=$(PY) containers/build.sh $(MODEL)

# Builds the image of a tiny random packaged model, runs it and talks to it over HTTP (CI runs it after `make test`).
test-container: setup
	$(PY) -m pytest -q -m container tests/e2e/test_container.py

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# One GPU, < 8 min: mini checkpoints -> S1..S3 in bf16 through the deepspeed launcher -> first-audio latency p50/p90
# and training tokens/s; exit 1 on any failure. GPU_SMOKE_ARGS="--device cpu --ranks 2" checks the plumbing on CPU.
gpu-smoke: setup
	$(PY) scripts/gpu_smoke.py $(GPU_SMOKE_ARGS)

ui: setup
	$(PY) -m flows ui

clean:
	rm -rf data models reports .prefect
