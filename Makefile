# lrpfn: `make demo` runs the demo end to end, `make test` runs the test suite.
# Both set up the local virtual environment .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint format docs bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[vision,timm,text,datasets,dev]"
	$(PY) -m pip install --quiet --no-deps zennit-crp==0.6
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check lrpfn tests examples benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 -q
	$(PY) benchmarks/bench_lrp.py --quick --no-write

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check lrpfn tests examples benchmarks
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format lrpfn tests examples benchmarks

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/bench_lrp.py

bench-quick: $(STAMP)
	$(PY) benchmarks/bench_lrp.py --quick

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .hypothesis
