# `make run` and `make test` each set themselves up on a fresh machine: a virtualenv with
# the project installed (runtime dependencies only for `run`; the test extra for `test`)
# and, for the tests, redis-server from the distribution's packages when it is missing.
# `make help` lists every target.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# The repository's folders are mapped to the import name `driftline` (pyproject.toml).
# A default editable install serves that mapping through an import hook mypy cannot
# follow; strict mode builds a tree of links under build/ that mypy and pytest read as
# real files. It links each file once, so the install is redone when files come or go.
EDITABLE := --config-settings editable_mode=strict
# -qq: setuptools prints a banner about the link tree on every install.

.PHONY: help run test lint typecheck unit redis-server promtool chromium install clean bench detection FORCE

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The package's files, rewritten only when the list changes, so that a new or removed
# module (or Lua script, or static file) re-runs the editable install.
$(VENV)/.modules: FORCE | $(BIN)/python
	@find service controller -type f ! -path '*/__pycache__/*' | LC_ALL=C sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(VENV)/.runtime: pyproject.toml $(VENV)/.modules
	$(BIN)/pip install -qq -e . $(EDITABLE)
	touch $@

# The test extra includes the runtime install, so it satisfies `make run` as well.
$(VENV)/.test: pyproject.toml $(VENV)/.modules
	$(BIN)/pip install -qq -e '.[test]' $(EDITABLE)
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime ## virtualenv with the runtime dependencies only

redis-server: ## install redis-server from the distribution's packages if missing
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  echo "redis-server not found: installing it from the distribution's packages"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# promtool (Prometheus's rule and exposition checker) ships in Debian's `prometheus`.
promtool: ## install promtool from the distribution's packages if missing
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  echo "promtool not found: installing it (package prometheus) from the distribution's packages"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The browser tests drive the distribution's chromium: Playwright never downloads one.
chromium: ## install chromium from the distribution's packages if missing
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  echo "chromium not found: installing it from the distribution's packages"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

run: $(VENV)/.runtime ## the service on :8080, embedded store, example monitor
	$(BIN)/driftline serve --monitors-dir examples/monitors --default-monitor credit-risk

lint: $(VENV)/.test ## ruff check and format check; the CI workflows against their schema
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

typecheck: $(VENV)/.test ## mypy --strict
	$(BIN)/mypy

# The live Kubernetes suites run against KUBECONFIG's cluster, else a throwaway API
# server from KUBEBUILDER_ASSETS (envtest binaries; .ci/run sets it), else they skip.
unit: $(VENV)/.test redis-server promtool chromium ## the pytest suite against a real redis-server
	$(BIN)/pytest

test: lint typecheck unit ## lint, types, then every test

# Not part of the tests: installs wrk and the peers (Evidently, whylogs) as
# benchmark-only extras, then prints and writes bench/results/latest.* and, after a
# full run, the README's performance table.
bench: $(VENV)/.runtime redis-server ## the benchmark suite (about 15 minutes on 2 cores)
	@command -v wrk >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/pip install -qq -e '.[bench]' $(EDITABLE)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.readme

# Statistical, not timed: detection delay and false alarms of driftline and Evidently on
# the same seeded streams (docs/metrics.md), written to bench/results/detection.md.
detection: $(VENV)/.runtime ## detection delay and false alarms beside Evidently (a few minutes)
	$(BIN)/pip install -qq -e '.[bench]' $(EDITABLE)
	$(BIN)/python -m bench.detection $(DETECTION_ARGS)

clean: ## remove the virtualenv, caches, build/ (editable link tree) and egg-info
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
