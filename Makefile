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
	$(RUN) python -m ablate.analyze $(STUDY)

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

# Studies: sweep, collect the table, analyse. Variables: DATA, DATA_ROOT, LAUNCHER (basic|parallel|slurm|
# submitit_local), SEEDS (e.g. 0,1,2,3,4), EPOCHS, ARGS (any other overrides).
# parallel: one process per CPU core (one torch thread each) or per GPU; basic: one job after another.
LAUNCHER ?= parallel
STUDY_ARGS = $(if $(DATA),data=$(DATA)) $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) launcher=$(LAUNCHER) \
	$(if $(SEEDS),seed=$(SEEDS)) $(if $(EPOCHS),trainer.epochs=$(EPOCHS)) $(ARGS)
define study
	$(RUN) python -m ablate +sweep=$(1) $(STUDY_ARGS)
	$(RUN) python -m ablate.collect $(1)
	$(RUN) python -m ablate.analyze $(1)
endef

.PHONY: depth depth-bn width mobilenet-depth mobilenet-width lr-policy optimizer batch-size lr-range

depth: install ## depth study allconv5..8_3: make depth [DATA=imagefolder DATA_ROOT=...] [LAUNCHER=parallel]
	$(call study,depth)
depth-bn: install ## depth study with BatchNorm
	$(call study,depth_bn)
width: install ## width study allconv6, allconv6_1..6_8
	$(call study,width)
mobilenet-depth: install ## MobileNet v1 depth study, 10..28 layers
	$(call study,mobilenet_depth)
mobilenet-width: install ## MobileNet width multiplier 1, 0.75, 0.5, 0.25
	$(call study,mobilenet_width)
lr-policy: install ## LR policy study: Caffe's policies, cyclical, SGDR
	$(call study,lr_policy)
optimizer: install ## optimizer study: SGD momenta, Nesterov, AdaGrad, AdaDelta, RMSProp, Adam
	$(call study,optimizer)
batch-size: install ## batch size 16..1024 x scaling rule none/linear/sqrt
	$(call study,batch_size)
lr-range: install ## LR range test for each model of a family
	$(call study,lr_range)
