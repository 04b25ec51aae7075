# One place for every install step: `make train` and `make test` set up .venv first when needed.
VENV ?= .venv
BIN := $(VENV)/bin
# the CIFAR-10 archive beside this checkout (this project's machines); any folder or archive works
ALEXNET_CIFAR10 ?= $(firstword $(wildcard $(CURDIR)/../shared/data/cifar10-jpeg.tar.gz))
export ALEXNET_CIFAR10
ARGS ?= experiment=tutorial_cifar10
PORT ?= 6006

.PHONY: help setup train test test-quick lint format tensorboard clean clean-logs
.DEFAULT_GOAL := help

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: these builds are on local disk here (a newer torch would download several GB)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed  ## create .venv with the project and its test tools

train: setup  ## train (default: the Keras tutorial's run); pass Hydra overrides in ARGS="..."
	$(BIN)/alexnet-train $(ARGS)

test: setup  ## the whole test suite (the real-data tests run when ALEXNET_CIFAR10 names an archive); what CI runs
	$(BIN)/pytest -q

test-quick: setup  ## everything but the tests marked slow (real data, and those that need a process of their own)
	$(BIN)/pytest -q -m "not slow"

lint: setup  ## ruff: the checks and the formatting (settings in pyproject.toml; the version is pinned in its test extra)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## ruff: fix what it can, then format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

tensorboard: setup  ## the training runs (logs/train; PORT=6007 for another port); debug runs: --logdir logs/debug
	$(BIN)/tensorboard --logdir logs/train --port $(PORT)

clean:  ## remove .venv and build outputs (runs stay in logs/)
	rm -rf $(VENV) build *.egg-info

clean-logs:  ## delete every run, sweep, evaluation and report under logs/ (asks first)
	@read -p "delete everything under logs/? [y/N] " answer && [ "$$answer" = y ] && find logs -mindepth 1 ! -name .gitkeep -delete || echo "kept"
