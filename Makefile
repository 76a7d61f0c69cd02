# Two entry points for a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv and run the headline comparison on scenarios/cooling-2048.toml
#   make test   set up .venv (with test extras and the real engine, the twin extra) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TWIN_STAMP := $(VENV)/.installed-twin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,distributed]"
	touch $(STAMP)

# The real DataDesigner engine (exact pins) for the twin's tests; make demo does not need it.
$(TWIN_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,twin]"
	touch $(TWIN_STAMP)

demo: $(STAMP)
	$(BIN)/admission-sim compare scenarios/cooling-2048.toml --policies fixed,global,localized --baseline global

test: $(TWIN_STAMP)
	$(BIN)/ruff check sim tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
