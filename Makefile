# medserve — the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-slow lint format models bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH, or PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, refreshed when pyproject.toml changes.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve]'
	@touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve,train,dev]'
	@touch $@ $(VENV)/.serve-installed

## Start the service with the demo models in models/ on HOST:PORT.
run: $(VENV)/.serve-installed
	MEDSERVE_MODEL_DIR=$${MEDSERVE_MODEL_DIR:-models} $(BIN)/medserve serve --host $(HOST) --port $(PORT)

## Set up and run the test suite (pytest's exit code 5, "no tests ran", fails the target too).
test: $(VENV)/.all-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Include the long training runs.
test-slow: $(VENV)/.all-installed
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app

format: $(VENV)/.all-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Train the demo model(s) on synthetic data into models/ (CPU, about 10-15 minutes).
## Generated data go to data/ (git-ignored); the test set uses a different seed.
PNEUMONIA_DATA ?= data/pneumonia_xray
PNEUMONIA_TEST ?= data/pneumonia_xray_test
models: $(VENV)/.all-installed
	$(BIN)/medserve-train synth pneumonia --out $(PNEUMONIA_DATA) --n 2400 --seed 1 --overwrite
	$(BIN)/medserve-train synth pneumonia --out $(PNEUMONIA_TEST) --n 500 --seed 2 \
		--test-fraction 0.9 --overwrite
	$(BIN)/medserve-train train pneumonia --data $(PNEUMONIA_DATA) --test-data $(PNEUMONIA_TEST) \
		--out models --version 1.0.0 --arch cnn --width 0.5 --size 128 --channels 1 \
		--epochs 25 --patience 6 --batch-size 32 --seed 1 --synthetic --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
