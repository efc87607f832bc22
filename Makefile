# Two entry points that work on a fresh machine (see README):
#   make demo   install, then run the main job on built-in data
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: install test test-all demo clean

install: $(VENV)/.installed

# torch first, pinned to the CPU build by constraints.txt, so nothing pulls CUDA wheels.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps -e docs/plugin-example
	touch $@

test: install
	$(BIN)/python -m pytest -m "not slow" --durations=15 -q

test-all: install
	$(BIN)/python -m pytest --durations=25 -q

# The Sudoku ordering study: one masked model trained on random orders, solved four ways,
# beside a causal model trained and solved in raster order (both cells land in one table).
demo: install
	$(BIN)/seqify matrix --modalities sudoku --orderers margin,top-prob,random,raster --generators masked \
		--train-orderer random --budget quick --seed 0 --out $(OUT)
	$(BIN)/seqify matrix --modalities sudoku --orderers raster --generators causal --budget quick --seed 0 --out $(OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache
