# The two commands: `make demo` and `make test`. Everything else is a convenience.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export ST_PIPELINE_HOME ?= $(CURDIR)/.st_pipeline
SIM_PORT ?= 8765
DEV_PORT ?= 3000

.PHONY: install demo test lint dev simulator catalogue bench bench-fleet clean readme

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

## Run the whole pipeline against the embedded simulator into a local SQLite warehouse.
demo: install
	$(BIN)/st-pipeline demo --port $(SIM_PORT)

## Run the test suite (needs PostgreSQL on 127.0.0.1:5432 for the production-path tests), two workers.
test: install
	$(BIN)/pytest -n 2

## Static checks: ruff (lint and format) and mypy, configured in pyproject.toml; .ci/run runs them first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The Dagster UI on the demo's state, with the simulator serving the demo tenant.
dev: install
	@set -e; \
	umask 077; export DAGSTER_HOME=$(ST_PIPELINE_HOME)/dagster ST_PIPELINE_SECRET_KEYS_FILE=$(ST_PIPELINE_HOME)/secret.key SERVICETITAN_ENVIRONMENT=custom \
	  SERVICETITAN_API_URL=http://127.0.0.1:$(SIM_PORT) \
	  SERVICETITAN_AUTH_URL=http://127.0.0.1:$(SIM_PORT)/connect/token SERVICETITAN_APP_KEY=ak1.simulator; \
	test -f $$DAGSTER_HOME/dagster.yaml || { echo "run 'make demo' first"; exit 1; }; \
	$(BIN)/st-pipeline simulator --port $(SIM_PORT) > $(ST_PIPELINE_HOME)/simulator.log 2>&1 & sim=$$!; \
	trap "kill $$sim 2>/dev/null || true" EXIT INT TERM; \
	$(BIN)/dg dev -w workspace.yaml --port $(DEV_PORT)

## A simulator in the foreground.
simulator: install
	$(BIN)/st-pipeline simulator --port $(SIM_PORT)

## Regenerate the endpoint catalogue from ../shared/servicetitan-specs.
catalogue: install
	$(BIN)/python -m st_pipeline.servicetitan.spec_import

## The sync and transform benchmarks (200k and 1M records; SQLite and PostgreSQL; see docs/benchmarks.md).
bench: install
	$(BIN)/python benchmarks/bench_sync.py
	$(BIN)/python benchmarks/bench_transform.py

## The fleet benchmark: 20 tenants, production-style instance and daemon on PostgreSQL (docs/benchmarks.md).
bench-fleet: install
	$(BIN)/python benchmarks/bench_fleet.py

clean:
	rm -rf $(VENV) $(ST_PIPELINE_HOME) .pytest_cache

## Rewrite the README's generated sections (counts, configuration, assets, checks, schedules) from the code.
readme: install
	$(BIN)/python -m tools.readme
