# One venv per checkout; every target installs what it needs first.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install install-test test-deps run test lint fmt bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	$(BIN)/luna-sender $(ARGS)

test-deps:
	bash scripts/test-deps.sh

test: install-test test-deps
	$(BIN)/ruff check luna_sender tests $(wildcard benchmarks)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check luna_sender tests $(wildcard benchmarks)

fmt: install-test
	$(BIN)/ruff check --fix luna_sender tests benchmarks

bench: install-test
	bash benchmarks/setup.sh
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
