# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# Both build .venv from scratch on first use; later runs reuse it unless pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench notebooks install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch must come first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/steerlens demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_hf_memory.py
	$(BIN)/python benchmarks/bench_generation.py
	# Builds steering-vectors 0.12.2 in its own venv once (about 4 min; it needs transformers<5).
	$(BIN)/python benchmarks/bench_training_vs_steering_vectors.py

notebooks: $(STAMP)
	$(BIN)/python scripts/build_notebooks.py
	$(BIN)/python scripts/build_notebooks.py --execute-only 04

clean:
	rm -rf $(VENV) .pytest_cache
