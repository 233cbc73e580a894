# Two entry points for a fresh machine with Python and pip: `make demo` and `make test`.
# Each creates .venv/ and installs what it needs. torch is installed first, on its own, so that you
# choose the build: the default is the CPU wheel; on a GPU machine pick yours, e.g.
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_RUN ?= demo
DEMO_MINUTES ?= 3

.PHONY: demo test clean-demo

$(BIN)/nash: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The whole main job on the built-in Shakespeare corpus, offline: prepare, train the tiny preset,
# evaluate, generate a sample and plot the curves. Training has a time budget rather than a step
# count, so the demo takes the same wall time on every CPU (a faster one trains more steps).
demo: $(BIN)/nash
	$(BIN)/nash prepare shakespeare
	$(BIN)/nash train --preset tiny --run $(DEMO_RUN) --overwrite \
		--set train.max_minutes=$(DEMO_MINUTES) --set train.max_steps=100000
	$(BIN)/nash eval runs/$(DEMO_RUN)
	$(BIN)/nash generate runs/$(DEMO_RUN) --prompt "ROMEO:" --max-tokens 120 --seed 0
	$(BIN)/nash plot runs/$(DEMO_RUN)

test: $(BIN)/nash
	$(BIN)/python -m pytest

clean-demo:
	rm -rf data/shakespeare runs/$(DEMO_RUN)
