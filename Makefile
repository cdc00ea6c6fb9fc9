# Two entry points from a fresh clone: `make serve` and `make test` (see README).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint install install-test model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs exactly the locked versions (requirements.lock) plus the project in editable mode.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/retryopt serve

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy features serving

test: lint
	$(BIN)/python -m pytest -n 2

# Rebuilds the shipped model (models/default) from 1,000,000 simulated invoices (several minutes).
model: install
	$(BIN)/retryopt simulate --invoices 1000000 --seed 7 --out build/sim-1m.parquet
	$(BIN)/retryopt train --data build/sim-1m.parquet --out models/default --seed 7

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
