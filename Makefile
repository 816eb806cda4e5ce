# Two commands on a fresh machine with Python 3.11:
#   make run    install into .venv, migrate, serve on http://127.0.0.1:5000 (HOST, PORT; Swagger UI at /apidocs)
#   make test   lint, type-check and run the whole test suite
PYTHON ?= python3
VENV   := .venv
LINT_DIRS := $(wildcard app tests bench)
BIN    := $(VENV)/bin
export FLASK_APP := app
# Processes started by honcho (granian through app.server, celery) come from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint typecheck pytest lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record which lock file the venv was installed from, so a lock change reinstalls.
$(VENV)/.runtime: requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	touch $@

$(VENV)/.dev: requirements.lock requirements-dev.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@ $(VENV)/.runtime

# The server prints the address it serves on; Ctrl-C stops everything (app/dev_run.py).
run: $(VENV)/.runtime
	$(BIN)/flask db upgrade
	@if [ -n "$$ADMIN_USERNAME" ] && [ -n "$$ADMIN_PASSWORD" ]; then \
		$(BIN)/flask create-admin --if-missing --email "$${ADMIN_EMAIL:-$$ADMIN_USERNAME@localhost.localdomain}"; \
	else \
		$(BIN)/flask admin-hint; \
	fi
	$(BIN)/python -m app.dev_run -f Procfile

lint: $(VENV)/.dev
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

typecheck: $(VENV)/.dev
	$(BIN)/mypy app

pytest: $(VENV)/.dev
	$(BIN)/pytest

test: lint typecheck pytest

# Re-resolve the lock files after editing the dependencies in pyproject.toml (the runtime set,
# then the dev extra constrained to the runtime lock's versions). pip-compile keeps the versions
# already locked unless the pins in pyproject.toml ask otherwise.
COMPILE := $(BIN)/pip-compile --quiet --strip-extras --no-header --no-emit-index-url --no-emit-find-links
lock: $(VENV)/.dev
	$(BIN)/pip install --quiet pip-tools==7.6.2
	$(COMPILE) -o requirements.lock pyproject.toml
	$(COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
