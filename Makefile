# Two entry points that work on a fresh machine (see README):
#   make demo   install, then run the main job on built-in data
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo
SEED ?= 0

.PHONY: install system-deps test test-all demo clean

install: $(VENV)/.installed

# open3d's CPU wheel loads libusb-1.0 and libGL: on Debian, install them once (as root, or
# with sudo when there is one); elsewhere, say what is missing and go on.
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libusb-1.0.so.0' || missing="$$missing libusb-1.0-0"; \
	ldconfig -p | grep -q 'libGL.so.1' || missing="$$missing libgl1"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    echo "installing Debian packages for open3d:$$missing"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	  else echo "warning: open3d needs the system libraries$$missing (the pointcloud modality will say so)"; fi; \
	fi

# torch first, pinned to the CPU build by constraints.txt, so nothing pulls CUDA wheels.
$(VENV)/.installed: pyproject.toml constraints.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,cluster]"
	$(BIN)/pip install --quiet --no-deps -e docs/plugin-example
	touch $@

test: install
	$(BIN)/python -m pytest -m "not slow" --durations=15 -q

test-all: install
	$(BIN)/python -m pytest --durations=25 -q

# The Sudoku ordering study: one masked model trained on random orders, solved five ways,
# beside a causal model trained and solved in raster order (both land in one table). The two
# matrices run side by side into one folder (they claim cells in its index), one torch thread
# per cell, so the numbers do not depend on the machine's core count; the masked matrix runs
# its four solves two at a time once its model is trained. SEEDS=0,1,2 runs the study over
# several seeds (summary.md: mean and 95% interval per orderer); SEED=N runs one.
SEED_ARGS = $(if $(SEEDS),--seeds $(SEEDS),--seed $(SEED))
demo: install
	@mkdir -p $(OUT); trap 'kill $$causal 2>/dev/null' INT TERM; \
	$(BIN)/seqify matrix --modalities sudoku --orderers raster --generators causal --budget quick $(SEED_ARGS) \
		--threads 1 --out $(OUT) > $(OUT)/causal.log 2>&1 & causal=$$!; \
	$(BIN)/seqify matrix --modalities sudoku --orderers margin,top-prob,entropy,random,raster --generators masked \
		--train-orderer random --budget quick $(SEED_ARGS) --jobs 2 --threads 1 --out $(OUT); masked=$$?; \
	wait $$causal; causal=$$?; \
	test $$causal = 0 || { echo "the causal matrix failed: $(OUT)/causal.log"; tail -5 $(OUT)/causal.log; }; \
	test $$masked = 0 && test $$causal = 0 && \
	$(BIN)/seqify matrix --modalities sudoku --orderers raster --generators causal --budget quick $(SEED_ARGS) \
		--threads 1 --out $(OUT) > /dev/null && echo "comparison (both matrices): $(OUT)/comparison.md"

clean:
	rm -rf $(VENV) runs .pytest_cache
