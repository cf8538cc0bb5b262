# regzoo: `make study` tunes, `make test` tests. Both set up .venv on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build first, so that a plain `torch>=2.4` requirement does not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
CONFIG ?= studies/configs/default.yaml
TRIALS ?=
STUDY ?= $(shell sed -n 's/^name: *//p' $(CONFIG))
PYTEST_ARGS ?=
PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help install study test test-all lint format dashboard report experiments bench docs clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install regzoo with its dev tools (only when pyproject.toml changed)

study: $(STAMP) ## Run the default study (CONFIG=path TRIALS=n override)
	$(BIN)/python -m regzoo run $(CONFIG) $(if $(TRIALS),--trials $(TRIALS))

test: $(STAMP) ## Run the test suite (slow tests excluded; see test-all)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check and mypy
	$(BIN)/ruff check regzoo zoo datamodules studies tests benchmarks
	$(BIN)/ruff format --check regzoo zoo datamodules studies tests benchmarks
	scripts/typecheck.sh

format: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format regzoo zoo datamodules studies tests benchmarks
	$(BIN)/ruff check --fix regzoo zoo datamodules studies tests benchmarks

dashboard: $(STAMP) ## Serve optuna-dashboard on the study storage (PORT=8080)
	$(BIN)/python -m regzoo dashboard --port $(PORT)

report: $(STAMP) ## Write plots and a summary page for a study (STUDY=name, default: CONFIG's)
	$(BIN)/python -m regzoo report $(STUDY)

experiments: $(STAMP) ## Run every lecture experiment in full
	$(BIN)/python -m regzoo experiment all

bench: $(STAMP) ## Run the benchmarks and rewrite BENCHMARKS.md
	$(BIN)/python -m benchmarks

clean: ## Remove runs/, caches and build leftovers (keeps .venv)
	rm -rf runs site lightning_logs wandb .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist *.egg-info

docs: $(STAMP) ## Build the documentation site into site/ (fails on a broken link or a missing page)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
