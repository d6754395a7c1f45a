# The two commands of README.md. Both create ./.venv on first use, with torch 2.13.0 and everything else.
#
# Which torch build: by default pip takes torch==2.13.0 from the indexes pip is configured with (a machine
# whose pip finds a local CPU wheel gets that one; plain PyPI on Linux serves the CUDA build, several GiB).
# TORCH_INDEX_URL installs it from that index instead; PyTorch's CPU wheels:
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip keeps a torch 2.13.0 that .venv already has: to switch an existing .venv to the CPU build, remove it first.
PYTHON ?= python3
TORCH_VERSION := 2.13.0
TORCH_INDEX_URL ?=
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= server,dev,paper,fetch
PYTEST_ARGS ?= -m "not slow"

.PHONY: install serve test test-all lint bench

$(BIN)/emopres: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q$(if $(TORCH_INDEX_URL), --index-url "$(TORCH_INDEX_URL)") "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "s3prl==0.4.18"  # the independent WavLM the Vsim test checks against
	touch $(BIN)/emopres

install: $(BIN)/emopres

serve: install   ## the service, embedded default: SQLite, in-process queue, lite profile
	$(BIN)/emopres serve --host 127.0.0.1 --port 8000

test: install    ## the test suite (real PostgreSQL and Redis on localhost; slow tests excluded)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install    ## what CI checks besides the tests: ruff (lint and format) over the tree, mypy on core/ and emopres_client/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-all: install
	$(BIN)/python -m pytest -m ""

bench: install
	$(BIN)/python bench/lite_throughput.py
