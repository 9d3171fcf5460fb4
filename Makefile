# One entry point for newcomers and CI. `make run` and `make test` set up the venv first (once).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
EXTRAS ?= embedder,matcher,gateway,embedded,dev

.PHONY: setup browser k8s-tools run test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: setup
	$(BIN)/facegate run

test: setup browser k8s-tools
	$(BIN)/python -m pytest

# tests/browser drive Debian's chromium (Playwright's own browser download does not work here). As root with
# apt-get (CI's clean clone) it is installed when missing; otherwise nothing happens and those tests skip, except
# with FACEGATE_REQUIRE_BROWSER=1 (.ci/run sets it): then a chromium that cannot be had stops the run here.
CHROMIUM ?= $(or $(FACEGATE_CHROMIUM),/usr/bin/chromium)
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for tests/browser"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
		echo "chromium could not be installed: tests/browser will skip" >&2; \
	fi
	@if [ "$${FACEGATE_REQUIRE_BROWSER:-0}" != 0 ] && [ ! -x $(CHROMIUM) ]; then \
		echo "FACEGATE_REQUIRE_BROWSER=1 and no chromium at $(CHROMIUM): tests/browser cannot run" >&2; \
		exit 1; \
	fi

# tests/test_k8s.py scans the rendered manifests with checkov, which pins ~100 packages of its own: it gets a venv of
# its own under .venv-tools/ (built once, ~300 MB, ~1 min), never the project's. Where it cannot be installed the
# scan skips, except with FACEGATE_REQUIRE_CHECKOV=1 (for CI): then this stops the run.
CHECKOV := .venv-tools/checkov/bin/checkov
k8s-tools: $(CHECKOV)

$(CHECKOV):
	@$(PY) -m venv .venv-tools/checkov && .venv-tools/checkov/bin/python -m pip install -q "checkov==3.3.30" || \
		{ rm -rf .venv-tools/checkov; echo "checkov could not be installed: the policy scan in tests/test_k8s.py will skip" >&2; \
		  if [ "$${FACEGATE_REQUIRE_CHECKOV:-0}" != 0 ]; then exit 1; fi; }

lint: setup
	$(BIN)/ruff check services tests bench migrations
	$(BIN)/ruff format --check services tests bench migrations

bench: setup
	$(BIN)/python -m pip install -q -e '.[baseline]'
	$(BIN)/python bench/embedder.py --json bench/out/embedder.json
	$(BIN)/python bench/matcher.py --json bench/out/matcher.json

typecheck: setup
	$(BIN)/mypy services
	$(BIN)/mypy -p bench

clean:
	rm -rf $(VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache
