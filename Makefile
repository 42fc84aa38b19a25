# t2ir1 — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all bench lint clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,rewards,serve,sweep,notebook,eval]"

install: $(PY) ## Create .venv and install t2ir1 with every extra (offline-capable)

demo: $(PY) ## Train the offline demo (python train.py): BiCoT-GRPO on the tiny/ShapeWorld model
	$(PY) train.py

test: $(PY) ## Fast test suite (CPU, a few minutes)
	$(PY) -m pytest -m "not slow" -q

test-all: $(PY) ## Every test, including slow multi-process, sweep and learning runs
	$(PY) -m pytest -q

bench: $(PY) ## Speed and memory benchmarks (print ratios)
	$(PY) benchmarks/rollout.py
	$(PY) benchmarks/rewards.py

lint: $(PY) ## Ruff lint
	$(BIN)/ruff check t2ir1 tests benchmarks train.py eval.py generate.py

clean: ## Remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
