# Driver2 → PlanManager sync: set-up, demo, UI and tests. Every target builds the virtual
# environment from requirements.lock first, so a fresh clone needs nothing but Python 3.11.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-from-lock

.PHONY: venv demo ui test test-fast lint format lock services clean

venv: $(STAMP)

$(STAMP): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$$(grep '^uv==' requirements.lock)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	touch $(STAMP)

## Run the sync once on the embedded default: Driver2 sandbox, SQLite PlanManager, local reports.
demo: venv
	$(BIN)/python scripts/demo.py run

## The same demo set-up with the Airflow UI (api-server, scheduler, dag-processor) on :8080.
ui: venv
	$(BIN)/python scripts/demo.py ui

## The whole test suite, against the sandbox, PostgreSQL, MariaDB and SQLite on 127.0.0.1.
test: venv services
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Start PostgreSQL and MariaDB on 127.0.0.1 where they are installed but down.
services:
	bash scripts/start-services.sh

## Re-pin every dependency after editing requirements.txt or requirements-dev.txt.
lock: venv
	$(BIN)/uv pip compile --quiet requirements.txt requirements-dev.txt --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --no-header -o requirements.lock

clean:
	rm -rf build .pytest_cache .ruff_cache
