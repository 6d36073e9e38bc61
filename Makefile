# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv if it is missing and install the package with the pinned dev requirements.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench figures lab clean-venv

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pasa_npu

# lint and type checks first, so CI (.ci/run calls `make test`) runs them too
test: $(STAMP) lint
	$(PY) -m pytest

# ruff (lint + format check, config in pyproject.toml) and mypy (strict on pasa_theory)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/bench_speed_memory.py

figures: $(STAMP)
	$(PY) -m pasa_npu.figures --all --out figures

lab: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check "jupyterlab>=4"
	$(VENV)/bin/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
