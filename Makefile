# One entry point for newcomers and CI. `make run` and `make test` set up the venv first (once).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
EXTRAS ?= embedder,matcher,gateway,embedded,dev

.PHONY: setup run test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: setup
	$(BIN)/facegate run

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check services tests bench migrations
	$(BIN)/ruff format --check services tests bench migrations

bench: setup
	$(BIN)/python -m pip install -q -e '.[baseline]'
	$(BIN)/python bench/embedder.py --json bench/out/embedder.json
	$(BIN)/python bench/matcher.py --json bench/out/matcher.json

typecheck: setup
	$(BIN)/mypy services

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
