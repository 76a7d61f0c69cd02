# Two entry points for a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv and run the headline comparison on the bundled cooling-2048 scenario
#   make test   set up .venv (with test extras and the real engine, the twin extra) and run the whole test suite
#   make native compile the hot path with mypyc into sim/_native (both targets above do it; skipped when
#               up to date; a failed build leaves the pure-Python sources running: same results, slower)
#   make notebooks  add the notebooks extra (JupyterLab), execute notebooks/*.ipynb into build/notebooks/;
#                   make notebooks OPEN=1 then opens JupyterLab on notebooks/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TWIN_STAMP := $(VENV)/.installed-twin

.PHONY: demo test lint bench clean notebooks native

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,native]"
	touch $(STAMP)

# The real DataDesigner engine (exact pins) for the twin's tests; make demo does not need it.
$(TWIN_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,native,twin]"
	touch $(TWIN_STAMP)

# The compiled hot path (docs/performance.md, "Compiled hot path"): rebuilt only when a source changed.
native: $(STAMP)
	@$(BIN)/python -m sim.native_build || echo "admission-sim: the compiled hot path was not built;" \
		"the pure-Python sources run (same results, slower)"

demo: native
	$(BIN)/admission-sim compare cooling-2048 --policies fixed,global,localized --baseline global

test: $(TWIN_STAMP) native
	$(BIN)/ruff check sim tests benchmarks
	$(BIN)/python -m pytest

NOTEBOOKS_OUT ?= build/notebooks
NOTEBOOKS_STAMP := $(VENV)/.notebooks-installed

$(NOTEBOOKS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,native,notebooks]"
	touch $(NOTEBOOKS_STAMP)

# Executed copies (with outputs) go to $(NOTEBOOKS_OUT); the committed notebooks stay without outputs.
notebooks: $(NOTEBOOKS_STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
		--output-dir $(NOTEBOOKS_OUT) notebooks/*.ipynb
	@echo "executed notebooks with outputs: $(NOTEBOOKS_OUT)/ (read or edit: $(BIN)/jupyter lab notebooks/)"
	$(if $(OPEN),$(BIN)/jupyter lab notebooks/)

bench: native
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache sim/_native
