# ecgvit — every target installs what it needs from nothing.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned: the pair that imports together here; a bare `torch` resolves a multi-GB CUDA build.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean browser wheel base-install

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH"; exit 1; }
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[train,test,ray]'
	touch $(STAMP)

demo: venv
	$(BIN)/python scripts/demo.py

# Chromium for the browser test (tests/test_browser.py), from Debian; never `playwright install`.
browser:
	@[ -x /usr/bin/chromium ] || { apt-get update -q && apt-get install -y -q chromium chromium-driver; } \
	  || echo "WARNING: could not install Debian's chromium: the browser test will be skipped"

# ruff (lint + format) and mypy: `make test` runs them first, so CI enforces them.
lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

test: venv browser lint
	$(BIN)/python -m pytest -q

# The wheel (bundled model and web page inside) and a fresh environment with its base install
# only (no extras, no torch): it must predict, explain, digitize and serve generated pages.
BASE := build/base-venv
wheel: venv
	rm -rf build/dist
	$(BIN)/pip wheel -q --no-deps -w build/dist .
	@ls -l build/dist/*.whl

base-install: wheel
	rm -rf $(BASE)
	$(PY) -m venv $(BASE)
	$(BASE)/bin/pip install -q --upgrade pip
	$(BASE)/bin/pip install -q build/dist/ecgvit-*.whl
	cd build && ECGVIT_WHEEL="$$(ls $(CURDIR)/build/dist/ecgvit-*.whl)" $(CURDIR)/$(BASE)/bin/python $(CURDIR)/scripts/base_install_check.py

bench: venv
	$(BIN)/python benchmarks/preprocess_bench.py
	$(BIN)/python benchmarks/synth_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ecgvit_cache demo_out build
