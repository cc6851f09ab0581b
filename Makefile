# lrpfn: `make demo` runs the demo end to end, `make test` runs the test suite.
# Both set up the local virtual environment .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser demo test test-fast lint format docs bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[vision,timm,text,datasets,report,dev]"
	$(PY) -m pip install --quiet --no-deps zennit-crp==0.6
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# the report's browser test drives Debian's chromium: installed here when missing and
# when running as root (otherwise that test fails and names what is missing)
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

test: $(STAMP) browser
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
