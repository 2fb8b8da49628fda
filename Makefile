# The two commands of the README: `make run` and `make test`. Each does its own set-up
# on a fresh machine: a virtualenv with the project's dependencies, and (for tests)
# redis-server from the distribution's packages when it is missing.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: run test lint typecheck unit redis-server install clean bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  echo "redis-server not found: installing it from the distribution's packages"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Starts the service on the embedded in-process store with the example monitor.
run: install
	$(BIN)/driftline serve --monitors-dir examples/monitors

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install redis-server
	$(BIN)/pytest

# The whole suite: lint, types, then every test against a real redis-server.
test: lint typecheck unit

# The benchmark suite (not part of the tests): installs wrk and the peers (Evidently,
# whylogs) as benchmark-only extras, then prints and writes bench/results/latest.*.
bench: install redis-server
	@command -v wrk >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
