# gpufair developer entry points. `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SHARED ?= ../shared
REPLAY_GPUS ?= 512
REPLAY_JOBS ?= 5000
REPLAY_ARGS ?=
DEMO_SECONDS ?= 0

.PHONY: test lint bench replay clean control-plane demo

# The one lint recipe: `make lint` and `make test` (so CI) run exactly these checks.
define LINT
	$(BIN)/ruff check .
	$(BIN)/mypy
endef

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and helm at pinned
# versions, built from their Go modules into GPUFAIR_CACHE (default ~/.cache/gpufair)/bin: about
# 17 minutes on 2 cores the first time, instant once cached.
control-plane:
	scripts/build-control-plane.sh
	scripts/build-workload-controllers.sh

test: $(STAMP) control-plane
	$(LINT)
	$(BIN)/pytest $(PYTEST_ARGS)

# A local GPU cluster playground: 16 fake nodes of 8 GPUs, three teams, the daemon and a mixed
# workload in a live table; Ctrl-C stops it. DEMO_SECONDS=N runs N seconds unattended.
demo: $(STAMP) control-plane
	$(BIN)/gpufair dev-cluster demo --seconds $(DEMO_SECONDS)

# ruff, then mypy with its configuration ([tool.mypy]) from pyproject.toml.
lint: $(STAMP)
	$(LINT)

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_cycle.py --out benchmarks/results
	$(BIN)/python benchmarks/simulator_speed.py --out benchmarks/results

# Replays the Philly trace (15 teams) on a contended cluster under every policy: the
# first REPLAY_JOBS jobs (REPLAY_JOBS=0 for all 82,247, which takes long: see the README).
replay: $(STAMP)
	$(BIN)/gpufair simulate --trace $(SHARED)/traces/philly/philly.csv --format philly \
		--gpus $(REPLAY_GPUS) --policy gpufair,drf,fifo --out sim-out/philly \
		$(if $(filter-out 0,$(REPLAY_JOBS)),--limit $(REPLAY_JOBS)) $(REPLAY_ARGS)
	@echo "open sim-out/philly/report.html"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache build *.egg-info
