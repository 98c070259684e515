# ablate — `make help` lists the targets. Variables: ARGS (extra Hydra overrides for `make run`).
.DEFAULT_GOAL := help
SHELL := /bin/bash

# uv comes from PyPI when missing; `python3 -m uv` works even where pip's script folder is not on PATH.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTHON_FOR_UV := $(shell command -v python3)
RUN := $(UV) run --frozen

.PHONY: help install run test test-all lint format

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-18s %s\n", $$1, $$2}'
	@printf "  make %-18s %s\n" "<study>" "a study, e.g. make depth DATA=imagefolder DATA_ROOT=... (sweep, table, report)"
	@printf "  %-23s %s\n" "" "studies (conf/sweep/): $(STUDIES)"

install: ## install uv if missing, then the locked environment (.venv) with torch, hydra, wandb, ...
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@# Byte-compiled at install: every test and sweep job is a fresh process that would otherwise recompile torch.
	@# The interpreter only when creating .venv: `uv sync -p` with a pyenv shim removes and rebuilds it every time.
	@[ -d .venv ] || $(UV) venv -p "$(PYTHON_FOR_UV)" .venv
	UV_COMPILE_BYTECODE=1 $(UV) sync --frozen

run: install ## one run: allconv6 on the embedded dataset (ARGS="model=allconv8_1 trainer.epochs=5")
	$(RUN) python -m ablate $(ARGS)

test: install ## the test suite: CPU-only, offline, a few minutes on 2 cores
	$(RUN) pytest

test-all: install ## the test suite including the slow tests
	$(RUN) pytest -m "slow or not slow"

lint: install ## ruff: lint and format check (CI runs this)
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## ruff: fix what it can and format
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

.PHONY: analyze bench wandb-sync wandb-report schedules

analyze: ## a study's report and figures from results/<study>/runs.csv: make analyze STUDY=depth
	@test -n "$(STUDY)" || { echo "make analyze: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python -m ablate.analyze $(STUDY) --results $(STUDY_RESULTS)

bench: install ## speed vs a hand-written loop, fixed cost per run, parallel study (ARGS="--quick" or "--device cuda")
	$(RUN) python scripts/bench.py --json results/bench.json $(ARGS)

schedules: install ## results/figures/lr_policies.png: every LR policy with the articles' settings
	$(RUN) python scripts/plot_schedules.py

wandb-sync: ## upload every offline W&B run of a study: make wandb-sync STUDY=depth
	@test -n "$(STUDY)" || { echo "make wandb-sync: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python -m ablate.tracking.wandb_sync $(STUDY) --root $(or $(RUNS),runs)

wandb-report: ## build a study's W&B report: make wandb-report STUDY=depth ENTITY=me [PROJECT=ablate]
	@test -n "$(STUDY)" || { echo "make wandb-report: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python scripts/wandb_dashboard.py --study $(STUDY) $(if $(ENTITY),--entity $(ENTITY)) --project $(or $(PROJECT),ablate)

# Studies: `make <study>` for every conf/sweep/<study>.yaml (make depth, make depth_bn or make depth-bn): the sweep,
# which ends by collecting results/<study>/runs.csv, then the analysis of that table. Variables: DATA, DATA_ROOT,
# BUDGET (smoke|cpu|gpu; cpu when unset), LAUNCHER (basic|parallel|slurm|submitit_local), SEEDS (e.g. 0,1,2,3,4),
# EPOCHS, ARGS (any other overrides).
# parallel: one process per CPU core (one torch thread each) or per GPU; basic: one job after another.
LAUNCHER ?= parallel
STUDIES := $(sort $(basename $(notdir $(wildcard conf/sweep/*.yaml))))
STUDY_ARGS = $(if $(BUDGET),budget=$(BUDGET)) $(if $(DATA),data=$(DATA)) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) launcher=$(LAUNCHER) \
	$(if $(SEEDS),seed=$(SEEDS)) $(if $(EPOCHS),trainer.epochs=$(EPOCHS)) $(ARGS)
# Where the sweep wrote the table: paths.results=... in ARGS, else the config's default.
STUDY_RESULTS = $(or $(patsubst paths.results=%,%,$(lastword $(filter paths.results=%,$(ARGS)))),results)

.PHONY: $(STUDIES) $(subst _,-,$(STUDIES))
$(STUDIES): %: conf/sweep/%.yaml install
	$(RUN) python -m ablate +sweep=$* $(STUDY_ARGS)
	$(RUN) python -m ablate.analyze $* --results $(STUDY_RESULTS)

# make depth-bn = make depth_bn
$(foreach study,$(STUDIES),$(if $(findstring _,$(study)),$(eval $(subst _,-,$(study)): $(study))))
