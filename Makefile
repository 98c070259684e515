# ablate — `make help` lists the targets. Variables: ARGS (extra Hydra overrides for `make run`).
.DEFAULT_GOAL := help
SHELL := /bin/bash

# uv comes from PyPI when missing; `python3 -m uv` works even where pip's script folder is not on PATH.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTHON_FOR_UV := $(shell command -v python3)
RUN := $(UV) run --frozen

.PHONY: help install run test test-all

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-18s %s\n", $$1, $$2}'

install: ## install uv if missing, then the locked environment (.venv) with torch, hydra, wandb, ...
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen -p "$(PYTHON_FOR_UV)"

run: install ## one run: allconv6 on the embedded dataset (ARGS="model=allconv8_1 trainer.epochs=5")
	$(RUN) python -m ablate $(ARGS)

test: install ## the test suite: CPU-only, offline, a few minutes on 2 cores
	$(RUN) pytest

test-all: install ## the test suite including the slow tests
	$(RUN) pytest -m "slow or not slow"
