# Two entry points from a fresh clone: `make serve` and `make test` (see README).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint audit install install-test model clean

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

# Known vulnerabilities in the pinned dependencies (requirements.lock), via pip-audit when PyPI's
# per-release API answers, else PyPI's per-project advisories (see .ci/audit_lock.py). Needs the
# network; fails (exit 2) when the data can't be fetched. Run by CI (.ci/run) before `make test`.
# An advisory that can't be fixed by a pin upgrade is accepted here, one line each with the reason:
#   AUDIT_IGNORE += --ignore-vuln GHSA-xxxx-xxxx-xxxx  # why it does not apply / no fixed release
AUDIT_IGNORE :=
audit: install-test
	$(BIN)/python .ci/audit_lock.py requirements.lock $(AUDIT_IGNORE)

# Rebuilds the shipped model (models/default) from 1,000,000 simulated invoices (several minutes).
model: install
	$(BIN)/retryopt simulate --invoices 1000000 --seed 7 --out build/sim-1m.parquet
	$(BIN)/retryopt train --data build/sim-1m.parquet --out models/default --seed 7

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
