PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test test-slow lint search bench clean

$(BIN)/spacelang: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch; a looser pin would let pip pick a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,embedded,onnx,report]'
	touch $@

setup: $(BIN)/spacelang

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

search: setup
	$(BIN)/spacelang search spaces/dlsr.space

bench: setup
	$(BIN)/python examples/bench_check.py
	$(BIN)/python examples/bench_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
