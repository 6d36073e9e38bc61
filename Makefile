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
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pasa_npu

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# BENCH_MAX_SEQ: longest sequence of the scaling table (32768 takes about 15 min on one core)
BENCH_MAX_SEQ ?= 32768
bench: $(STAMP)
	$(PY) benchmarks/bench_kernel.py
	$(PY) benchmarks/bench_sweep.py --max-seq $(BENCH_MAX_SEQ)
	$(PY) benchmarks/bench_speed_memory.py --skip-long

figures: $(STAMP)
	$(PY) -m pasa_npu.figures --all --out figures

lab: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check "jupyterlab>=4"
	$(VENV)/bin/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
