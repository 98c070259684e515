# ablate — `make help` lists the targets. Variables: ARGS (extra Hydra overrides for `make run`); for studies below.
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
	@printf "  %-23s %s\n" "" "studies (ablate/conf/sweep/): $(STUDIES)"

install: ## install uv if missing, then the locked environment (.venv) with torch, hydra, wandb, ...
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@# Byte-compiled at install: where PYTHONDONTWRITEBYTECODE is set (these VMs, many Docker images) Python never
	@# writes a .pyc, so every process compiled torch, hydra and wandb again: 18 s to import ablate.train, 6 s with
	@# the .pyc files, which cost 24-34 s once at install (README).
	@# The interpreter only when creating .venv: `uv sync -p` with a pyenv shim removes and rebuilds it every time.
	@[ -d .venv ] || $(UV) venv -p "$(PYTHON_FOR_UV)" .venv
	$(UV) sync --frozen --compile-bytecode

run: install ## one run: allconv6 on the embedded dataset (ARGS="model=allconv8_1 trainer.epochs=5")
	$(RUN) python -m ablate $(ARGS)

test: install ## the test suite: CPU-only, offline, about 9 to 13 minutes on 2 cores (the slowest 15 listed)
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

analyze: ## a study's report and figures from its runs.csv: make analyze STUDY=depth [DATA=... BUDGET=... RESULTS=...]
	@test -n "$(STUDY)" || { echo "make analyze: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python -m ablate.analyze $(STUDY) $(ANALYZE_ARGS)

bench: install ## speed vs a hand-written loop, fixed cost per run, parallel study (ARGS="--quick" or "--device cuda")
	$(RUN) python scripts/bench.py --json results/bench.json $(ARGS)

schedules: install ## results/figures/lr_policies.png: every LR policy with the articles' settings
	$(RUN) python scripts/plot_schedules.py

wandb-sync: ## upload every offline W&B run of a study: make wandb-sync STUDY=depth
	@test -n "$(STUDY)" || { echo "make wandb-sync: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python -m ablate.tracking.wandb_sync $(STUDY) --root $(STUDY_RUNS) --results $(STUDY_RESULTS)

wandb-report: ## build a study's W&B report: make wandb-report STUDY=depth ENTITY=me [PROJECT=ablate DATA=... BUDGET=...]
	@test -n "$(STUDY)" || { echo "make wandb-report: STUDY is required, e.g. STUDY=depth"; exit 2; }
	$(RUN) python scripts/wandb_dashboard.py --study $(STUDY) $(if $(ENTITY),--entity $(ENTITY)) --project $(or $(PROJECT),ablate) \
		$(if $(DATA),--data $(DATA)) $(if $(BUDGET),--budget $(BUDGET))

# Studies: `make <study>` for every ablate/conf/sweep/<study>.yaml (make depth, make depth_bn or make depth-bn): the sweep,
# which ends by collecting <results>/<data>/<budget>/<study>/runs.csv, then the analysis of that table. Variables:
# DATA, DATA_ROOT, LAUNCHER (basic|parallel|slurm|submitit_local), SEEDS (e.g. 0,1,2,3,4), EPOCHS, BUDGET (a budget
# option), RUNS (paths.runs), RESULTS (paths.results), ARGS (any other overrides). Each reaches the sweep and the
# analysis, so runs of another dataset or budget are never mixed into the table analysed. WANDB (auto, online or
# offline, as logger.mode) also logs the analysis as the study's W&B analysis run (python -m ablate.analyze --wandb).
# parallel: one process per CPU core (one torch thread each) or per GPU; basic: one job after another.
LAUNCHER ?= parallel
STUDIES := $(sort $(basename $(notdir $(wildcard ablate/conf/sweep/*.yaml))))
STUDY_ARGS = $(if $(DATA),data=$(DATA)) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) launcher=$(LAUNCHER) \
	$(if $(SEEDS),seed=$(SEEDS)) $(if $(EPOCHS),trainer.epochs=$(EPOCHS)) $(if $(BUDGET),budget=$(BUDGET)) \
	$(if $(RUNS),paths.runs=$(RUNS)) $(if $(RESULTS),paths.results=$(RESULTS)) $(ARGS)
# A key's value as the run will see it: ARGS (given last, so it wins), else the variable, else the config's default.
from_args = $(patsubst $(1)=%,%,$(lastword $(filter $(1)=%,$(ARGS))))
STUDY_RUNS = $(or $(call from_args,paths.runs),$(RUNS),runs)
STUDY_RESULTS = $(or $(call from_args,paths.results),$(RESULTS),results)
# The table's folder is data.name, which a data option sets and data.name=... (two image folders) overrides.
STUDY_DATA = $(or $(call from_args,data.name),$(call from_args,data),$(DATA),synthetic)
STUDY_BUDGET = $(or $(call from_args,budget),$(BUDGET))
ANALYZE_ARGS = --results $(STUDY_RESULTS) --data $(STUDY_DATA)$(if $(STUDY_BUDGET), --budget $(STUDY_BUDGET))$(if $(WANDB), --wandb=$(WANDB))

.PHONY: $(STUDIES) $(subst _,-,$(STUDIES))
$(STUDIES): %: ablate/conf/sweep/%.yaml install
	$(RUN) python -m ablate +sweep=$* $(STUDY_ARGS)
	$(RUN) python -m ablate.analyze $* $(ANALYZE_ARGS)

# make depth-bn = make depth_bn
$(foreach study,$(STUDIES),$(if $(findstring _,$(study)),$(eval $(subst _,-,$(study)): $(study))))
