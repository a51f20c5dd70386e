# The two commands: `make run` (the app with a demo school, a consumer and a local mailbox) and
# `make test` (bandit over school/, then the whole suite against real Redis, PostgreSQL, SMTP and Chromium).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := run

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
PORT ?= 5000
PYTEST_ARGS ?=
# Most slow tests wait on real servers rather than compute: three at a time fit two cores.
TEST_WORKERS ?= 3

.PHONY: run test bench setup setup-test

run: setup
	$(BIN)/flask --app app db upgrade
	$(BIN)/python -m school.devserver --port $(PORT)

test: setup-test
	@TEST_DATABASE_URL="$${TEST_DATABASE_URL:-$$(scripts/test-database-url)}"; \
	export TEST_DATABASE_URL; \
	echo "PostgreSQL tests use the server at $${TEST_DATABASE_URL##*@}"; \
	$(BIN)/bandit -r school --quiet; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python -m bench

setup: $(VENV)/.installed-runtime

setup-test: $(VENV)/.installed-test
	@scripts/test-services

# Stamps: reinstall only when a requirements file changes.
$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.installed-test: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-runtime

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || scripts/apt-install python3-venv
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
