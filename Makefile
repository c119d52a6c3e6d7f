# Two commands matter: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
RUNSTAMP := $(VENV)/.installed-run
WEB    := relay/web
BUNDLE := $(WEB)/dist/sdk.js

.PHONY: run test lint typecheck unit web install bench bench-quick bench-table clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	@touch $@

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(RUNSTAMP)

install: $(STAMP)

# The browser bundle is generated, never committed. Without node the relay
# still runs; the SDK, viewer and console pages answer 503 until it is built.
web:
	@if [ ! -f $(WEB)/package.json ]; then \
		echo "note: $(WEB)/package.json not found: no browser bundle to build."; \
	elif command -v npm >/dev/null 2>&1; then \
		if [ ! -d $(WEB)/node_modules ] || [ $(WEB)/package-lock.json -nt $(WEB)/node_modules/.package-lock.json ]; then \
			(cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error); fi; \
		(cd $(WEB) && npm run --silent build); \
	else \
		echo "note: node/npm not found: the browser bundle (sdk.js, viewer, console) is not built."; \
		echo "      install Node.js 18+ and run 'make web' to enable co-browsing pages."; \
	fi

run: $(RUNSTAMP) web
	$(PY) -m relay

lint: install
	$(PY) -m ruff check protocol relay agent tests bench
	$(PY) -m ruff format --check protocol relay agent tests bench

typecheck: install
	$(PY) -m mypy

unit: install
	$(PY) -m pytest -q

# pytest runs under coverage, and so does every relay the test harness starts
# (tests/conftest.py passes COVERAGE_PROCESS_START to them; coverage's .pth reads it);
# their data files are combined into one report at the end (under build/, ignored).
# The exit status is the tests'.
COVERAGE_DATA := $(CURDIR)/build/coverage

test: install web lint typecheck
	@rm -rf $(COVERAGE_DATA) && mkdir -p $(COVERAGE_DATA)
	@export COVERAGE_FILE=$(COVERAGE_DATA)/.coverage; status=0; \
	$(PY) -m coverage run -m pytest -q || status=$$?; \
	$(PY) -m coverage combine -q && $(PY) -m coverage report || { [ $$status -ne 0 ] || status=1; }; \
	exit $$status

bench: install web
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench all

bench-quick: install web
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench quick

bench-table: install
	$(PY) -m bench table

clean:
	rm -rf $(VENV) $(WEB)/node_modules $(WEB)/dist .mypy_cache .ruff_cache .pytest_cache build/coverage
