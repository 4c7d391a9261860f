# Front door. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.lock)
# what `system` installs when missing (only the missing ones: a NodeSource nodejs already carries npm and conflicts with Debian's)
APT_PACKAGES := unixodbc libsqliteodbc odbc-postgresql postgresql mariadb-server redis-server python3-venv nodejs npm docker-compose chromium
PYTEST_ARGS ?=
# this checkout's code first (a git worktree shares the venv, whose editable install points at another checkout)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help setup system demo airflow prod-local test test-fast test-slow clean bench bench-executors

help:
	@echo "make demo     simulate, aggregate, train, backfill the DAG through Airflow's scheduler, print the report"
	@echo "make test     the whole test suite (real Airflow, Azurite, SQLite and PostgreSQL over ODBC)"
	@echo "make airflow  Azurite + airflow standalone on the demo's runs (UI at http://localhost:8080)"
	@echo "make prod-local  the production topology as local processes (Celery, 2 workers, PostgreSQL, Redis) until Ctrl-C"
	@echo "make bench-executors  the same fleet through Celery (2 workers) and LocalExecutor, alternated (BENCHMARKS.md)"
	@echo "make setup    only install: system packages (as root), venv from requirements.lock, Azurite"

setup: system $(VENV)/.installed node_modules/.installed

# System packages via apt when root and something is missing; otherwise say what is needed.
system:
	@missing=""; \
	odbcinst -q -d -n SQLite3 >/dev/null 2>&1 || missing="$$missing libsqliteodbc unixodbc"; \
	odbcinst -q -d -n "PostgreSQL Unicode" >/dev/null 2>&1 || missing="$$missing odbc-postgresql"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/sbin/mariadbd || missing="$$missing mariadb-server"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	$(PYTHON) -c "import venv, ensurepip" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# The venv is built from the fully pinned lock (Airflow's constraint files are not reachable here).
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) --no-deps -e .
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(PY) -m devstack.demo

airflow: setup
	$(PY) -m devstack.airflow_ui

# The production topology from the installed wheel (devstack/prod_local.py): state and logs in .local/prod.
# BACKEND=azureml: scored through the local Azure ML emulator (devstack/topology_aml.py).
prod-local: setup
	$(PY) -m devstack.prod_local $(if $(BACKEND),--backend $(BACKEND)) $(PROD_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Fleet-scale benchmark (not part of `make test`): floor vs the DAG through the scheduler; writes BENCHMARKS.md.
# Quick run: make bench BENCH_ARGS="--targets 100 --modes 10 auto"
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

# Issue 13: the same fleet through the production topology with CeleryExecutor (2 workers) and with
# LocalExecutor, runs alternated, in one invocation; writes its section of BENCHMARKS.md (~30 min).
# Quick run: make bench-executors BENCH_ARGS="--targets 100 --modes auto --repeats 1"
bench-executors: setup
	$(PY) -m bench.executors $(BENCH_ARGS)

clean:
	rm -rf .local
