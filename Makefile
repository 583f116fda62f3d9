# `make test` is the README's test command: it creates .venv when missing, installs the
# project (with the dev extra) into it and runs the test suite on the CPU.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format data demo reproduce check-results clean

# The README's main command (`run_rl.py demo`): on the real Fashion-MNIST from Debian's
# dataset-fashion-mnist package, PPO agents on the main model shipped with the package against
# a plain CNN trained here with the same budget; well under 15 minutes on 2 CPU cores.
FASHION_MNIST := /usr/share/datasets/fashion-mnist

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

data: | $(FASHION_MNIST)

demo: $(STAMP) | $(FASHION_MNIST)
	$(BIN)/python run_rl.py demo --out runs/demo

# The thesis's Chapter 4, every experiment with a verdict (docs/reproduction.md; about an hour on
# 2 CPU cores; add --quick for minutes). Table 4.1 reads the committed 3-seed table.
reproduce: $(STAMP) | $(FASHION_MNIST)
	$(BIN)/python run_rl.py reproduce all --table-dir docs/results/tradeoff --out runs/reproduction

# Regenerates every committed results directory under docs/results/ from its recorded command,
# nothing retrained, and fails naming each committed file that differs (about 6 minutes on
# 2 CPU cores, 5.5 of them the WikiText-2 evaluation; it needs ../shared/data/wikitext-2).
check-results: $(STAMP) | $(FASHION_MNIST)
	$(BIN)/python -m agents.experiments.check_results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
