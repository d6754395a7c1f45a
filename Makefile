# The two commands of README.md. Both create ./.venv on first use (torch pinned to the CPU build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= server,dev,paper,fetch
PYTEST_ARGS ?= -m "not slow"

.PHONY: install serve test test-all bench

$(BIN)/emopres: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "s3prl==0.4.18"  # the independent WavLM the Vsim test checks against
	touch $(BIN)/emopres

install: $(BIN)/emopres

serve: install   ## the service, embedded default: SQLite, in-process queue, lite profile
	$(BIN)/emopres serve --host 127.0.0.1 --port 8000

test: install    ## the test suite (real PostgreSQL and Redis on localhost; slow tests excluded)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -m ""

bench: install
	$(BIN)/python bench/lite_throughput.py
