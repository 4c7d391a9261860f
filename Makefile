# Front door. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.lock)
PYTEST_ARGS ?=
# this checkout's code first (a git worktree shares the venv, whose editable install points at another checkout)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help setup setup-demo system system-demo demo airflow prod-local test test-fast test-slow clean bench bench-executors

help:
	@echo "make demo     simulate, aggregate, train, backfill the DAG through Airflow's scheduler, print the report"
	@echo "make test     the whole test suite (real Airflow, Azurite, SQLite and PostgreSQL over ODBC; also needs"
	@echo "              PostgreSQL, MariaDB, Redis, docker-compose and Chromium, installed via apt as root)"
	@echo "make airflow  Azurite + airflow standalone on the demo's runs (UI at http://localhost:8080)"
	@echo "make prod-local  the production topology as local processes (Celery, 2 workers, PostgreSQL, Redis) until Ctrl-C"
	@echo "make bench-executors  the same fleet through Celery (2 workers) and LocalExecutor, alternated (BENCHMARKS.md)"
	@echo "make setup    only install: system packages (as root), venv from requirements.lock, Azurite"
	@echo "make setup-demo  only what the demo and the UI need (no PostgreSQL, MariaDB, Redis, docker-compose, Chromium)"

setup: system $(VENV)/.installed node_modules/.installed

# what the demo and the UI need: no PostgreSQL, MariaDB, Redis, docker-compose or Chromium
setup-demo: system-demo $(VENV)/.installed node_modules/.installed

# System packages: for each, the apt package(s) and how to tell it is there; only missing ones are installed
# (a NodeSource nodejs already carries npm and conflicts with Debian's). `make demo` and `make airflow`
# need only DEMO_SYSTEM (unixODBC with the SQLite driver, Node.js for Azurite, venv); the tests need them all.
PKG_sqlite := libsqliteodbc unixodbc
HAS_sqlite := odbcinst -q -d -n SQLite3
PKG_node := nodejs npm
HAS_node := command -v npm
PKG_venv := python3-venv
HAS_venv := $(PYTHON) -c "import venv, ensurepip"
PKG_pgodbc := odbc-postgresql
HAS_pgodbc := odbcinst -q -d -n "PostgreSQL Unicode"
PKG_postgres := postgresql
HAS_postgres := ls /usr/lib/postgresql/*/bin/initdb
PKG_mariadb := mariadb-server
HAS_mariadb := test -x /usr/sbin/mariadbd
PKG_redis := redis-server
HAS_redis := command -v redis-server
PKG_compose := docker-compose
HAS_compose := command -v docker-compose
PKG_chromium := chromium
HAS_chromium := test -x /usr/bin/chromium
DEMO_SYSTEM := sqlite node venv
TEST_SYSTEM := $(DEMO_SYSTEM) pgodbc postgres mariadb redis compose chromium

# Install the missing ones of $(1) via apt when root; otherwise say what is needed and stop.
define need_system
	@missing=""; \
	$(foreach p,$(1),$(HAS_$(p)) >/dev/null 2>&1 || missing="$$missing $(PKG_$(p))"; ) \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

system:
	$(call need_system,$(TEST_SYSTEM))

system-demo:
	$(call need_system,$(DEMO_SYSTEM))

# The venv is built from the fully pinned lock (Airflow's constraint files are not reachable here).
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "installing the venv from requirements.lock (1-2 minutes the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) --no-deps -e .
	@touch $@

node_modules/.installed: package.json package-lock.json
	@echo "installing Azurite and playwright-core from package-lock.json (about half a minute the first time)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup-demo
	$(PY) -m devstack.demo

airflow: setup-demo
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
