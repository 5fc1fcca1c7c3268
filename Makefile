# One venv per checkout; every target installs what it needs first.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install install-test test-deps run test test-fast lint fmt bench clean

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

# The full suite, after the lint: what CI runs (.ci/run). The 30 slowest tests are listed at
# the end: CI's budget is 30 minutes, install included.
test: lint test-deps
	$(BIN)/pytest -q --durations=30 $(PYTEST_ARGS)

# The non-slow tier (no end-to-end, fault, fuzz or browser tests) after the lint: the loop to
# run before pushing; `make test` is ~20 minutes on 2 cores.
test-fast: lint test-deps
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

# Style, layout and types; mypy's options (strict, pydantic plugin) are in pyproject.toml.
lint: install-test
	$(BIN)/ruff check luna_sender tests $(wildcard benchmarks)
	$(BIN)/ruff format --check luna_sender tests $(wildcard benchmarks)
	$(BIN)/mypy --strict luna_sender

fmt: install-test
	$(BIN)/ruff check --fix luna_sender tests benchmarks
	$(BIN)/ruff format luna_sender tests benchmarks

bench: install-test
	bash benchmarks/setup.sh
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
