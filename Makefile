# The two quickstart commands are `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages demo test test-slow selftest dev bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/balances-etl demo

# PostgreSQL and a Java runtime for the tests' real servers, from Debian's packages when missing.
system-packages:
	./scripts/system-packages.sh

test: $(STAMP) system-packages
	$(BIN)/python -m pytest -n 2 -m "not slow"

test-slow: $(STAMP) system-packages
	$(BIN)/python -m pytest -m slow

selftest: $(STAMP)
	$(BIN)/balances-etl selftest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m benchmarks.run

dev: $(STAMP)
	$(BIN)/balances-etl dev

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
