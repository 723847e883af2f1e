# adasparse-lab: `make help` lists the targets. Every target sets up .venv first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: help setup study train test test-fast bench clone-to-report lint imports mlflow-ui dashboard services

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv: torch 2.13.0 (CPU) first, then the project with dev extras

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

study: setup  ## the main job: the sparsity study on the built-in synthetic dataset
	$(PY) -m adasparse_lab.sweep +study=sparsity

train: setup  ## one training run (AdaSparse fusion on synthetic data)
	$(PY) -m adasparse_lab.train

test: setup  ## every test, slow ones included (what CI runs)
	$(PY) -m pytest -m "slow or not slow"

test-fast: setup  ## the inner loop: tests not marked slow (1-3 min on 2 cores)
	$(PY) -m pytest -m "not slow"

bench: setup  ## training-throughput, serving-latency and preparation benchmarks
	$(PY) -m adasparse_lab.bench

clone-to-report:  ## time git clone + make setup + make study in a temp dir (README's durations)
	$(PYTHON) -m adasparse_lab.bench.clone_to_report

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check adasparse_lab tests
	$(VENV)/bin/ruff format --check adasparse_lab tests

imports: setup  ## the package's import graph; fails on an arrow up the layers
	$(PY) -m tests.import_layers

mlflow-ui: setup  ## browse every run (lean server: 1 worker, no job runner)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui \
	  --backend-store-uri sqlite:///studies/mlflow.db --workers 1 --port 5000

STUDY ?= sparsity
PORT ?= 8080
dashboard: setup  ## a study's Optuna storage in optuna-dashboard (STUDY=sparsity PORT=8080)
	$(PY) -m adasparse_lab.store.dashboard study=$(STUDY) port=$(PORT)

services: setup  ## a local PostgreSQL and MLflow server for multi-machine studies (prints the URLs; Ctrl-C stops; with PGPASSWORD set, the database asks for it; with MLFLOW_TRACKING_USERNAME/PASSWORD set, the tracking server does: MLflow basic-auth)
	$(PY) -m adasparse_lab.services $(if $(PGPASSWORD),--password-from-env) $(if $(MLFLOW_TRACKING_PASSWORD),--auth)
