# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install clean-venv numbers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision first, pinned to the versions this machine serves; then the
# project in editable mode (re-run only when pyproject.toml changes).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Every measured table in docs, rerun and rewritten in place (benchmarks/doc_tables.py; needs
# the photos of scripts/fetch_*.sh; on an otherwise idle machine: some tables time things).
# ARGS=--slow adds the tables that train networks or run for many minutes; ARGS="--only NAME"
# reruns one table, ARGS=--no-timing only those without times, ARGS=--list names them all.
numbers: $(STAMP)
	$(BIN)/python benchmarks/doc_tables.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
