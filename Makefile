# Two entry points for a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv and run the headline comparison on the bundled cooling-2048 scenario
#   make test   set up .venv (with test extras) and run the whole test suite
#   make notebooks  add the notebooks extra (JupyterLab), execute notebooks/*.ipynb into build/notebooks/;
#                   make notebooks OPEN=1 then opens JupyterLab on notebooks/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,distributed]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/admission-sim compare cooling-2048 --policies fixed,global,localized --baseline global

test: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks
	$(BIN)/python -m pytest

NOTEBOOKS_OUT ?= build/notebooks
NOTEBOOKS_STAMP := $(VENV)/.notebooks-installed

$(NOTEBOOKS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,notebooks]"
	touch $(NOTEBOOKS_STAMP)

# Executed copies (with outputs) go to $(NOTEBOOKS_OUT); the committed notebooks stay without outputs.
notebooks: $(NOTEBOOKS_STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
		--output-dir $(NOTEBOOKS_OUT) notebooks/*.ipynb
	@echo "executed notebooks with outputs: $(NOTEBOOKS_OUT)/ (read or edit: $(BIN)/jupyter lab notebooks/)"
	$(if $(OPEN),$(BIN)/jupyter lab notebooks/)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
