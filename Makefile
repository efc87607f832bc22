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
# beside a causal model trained and solved in raster order (both cells land in one table).
# One cell after another, with every core on each: on a 2-core CPU two of these cells side by
# side (--jobs 2, one thread each) train 2.5x slower each, so running them in parallel loses
# (benchmarks/RESULTS.md, issue 20). SEEDS=0,1,2 runs the study over several seeds (summary.md:
# mean and 95% interval per orderer); SEED=N runs one.
SEED_ARGS = $(if $(SEEDS),--seeds $(SEEDS),--seed $(SEED))
demo: install
	$(BIN)/seqify matrix --modalities sudoku --orderers margin,top-prob,entropy,random,raster --generators masked \
		--train-orderer random --budget quick $(SEED_ARGS) --out $(OUT)
	$(BIN)/seqify matrix --modalities sudoku --orderers raster --generators causal --budget quick $(SEED_ARGS) --out $(OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache
