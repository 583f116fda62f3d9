# `make test` is the README's test command: it creates .venv when missing, installs the
# project (with the dev extra) into it and runs the test suite on the CPU.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo clean

# The README's main command: real Fashion-MNIST from Debian's dataset-fashion-mnist package,
# a small network and budget that finish in well under 15 minutes on 2 CPU cores.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
DEMO_FLAGS := --algo ppo --env DynaLay-FashionMNIST-v0 --seed 0 --widths 16 32 64 \
	--pretrain-epochs 2 --train-size 12000 --rounds 2 --total-timesteps 16384 --num-envs 64 \
	--logdir runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(FASHION_MNIST):
	@echo "Installing Debian's dataset-fashion-mnist (real Fashion-MNIST, offline)..."
	@if [ "$$(id -u)" = 0 ]; then apt-get install -y dataset-fashion-mnist >/dev/null || \
		(apt-get update >/dev/null && apt-get install -y dataset-fashion-mnist >/dev/null); \
	else sudo apt-get install -y dataset-fashion-mnist; fi

demo: $(STAMP) | $(FASHION_MNIST)
	$(BIN)/python run_rl.py $(DEMO_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
