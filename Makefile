# medserve — the two commands are `make run` and `make test`.
# Debian's python3.11 where there is one that can make a venv (the container's interpreter,
# libpython linked into the executable: the service 2-6 % faster per upload than on pyenv's plain
# --enable-shared source build, bench/ab.py), else the python3.11 on PATH.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3.11 || echo python3.11)
endif
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-slow lint format bench bench-hospital models models-ct models-brain models-phantom clean \
	container-test container-base

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH, or PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, refreshed when pyproject.toml changes.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve]'
	@touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve,train,dev,batch]'
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

## Floor vs pipeline vs HTTP vs Keras for the demo models -> BENCHMARKS.md (about 5 minutes;
## run it on an idle machine). The Keras column uses the training checkpoints in runs/ when
## `make models` ran here, otherwise the same architectures with fresh weights.
bench: $(VENV)/.all-installed
	$(BIN)/python bench/benchmark.py $(BENCH_ARGS)

## Hospital-sized inputs (2500x2000 films, 512x512x300 CT, ...) against the plain reference
## pipeline -> the "Hospital-sized inputs" section of BENCHMARKS.md (about 10 minutes).
bench-hospital: $(VENV)/.all-installed
	$(BIN)/python bench/hospital.py $(BENCH_ARGS)

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app training

format: $(VENV)/.all-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Train the demo models on synthetic data into models/ (CPU, several hours in all). Each
## model's hyper-parameters and data-set sizes are its preset, training/tasks/<model>/demo.toml
## (the [synth], [synth_test], [study] and [train] tables); generated data go to data/
## (git-ignored) and the held-out test sets use another seed.
TRAIN := $(BIN)/medserve-train
PNEUMONIA_DATA ?= data/pneumonia_xray
PNEUMONIA_TEST ?= data/pneumonia_xray_test
models: models-ct
models: models-brain
models: models-phantom
models: $(VENV)/.all-installed
	$(TRAIN) synth pneumonia_xray --preset demo --out $(PNEUMONIA_DATA) --overwrite
	$(TRAIN) synth pneumonia_xray --preset demo --preset-section synth_test \
		--out $(PNEUMONIA_TEST) --overwrite
	$(TRAIN) train pneumonia_xray --preset demo --data $(PNEUMONIA_DATA) \
		--test-data $(PNEUMONIA_TEST) --out models --version 1.3.0 --overwrite

## COVID-19 chest CT (covid_ct): CT-0 vs CT-2+CT-3 volumes at 128 px, a 3D CNN at 32x64x64
## (about 15-20 minutes on 2 CPU cores).
COVID_CT_DATA ?= data/covid_ct
COVID_CT_TEST ?= data/covid_ct_test
models-ct: $(VENV)/.all-installed
	$(TRAIN) synth covid_ct --preset demo --out $(COVID_CT_DATA) --overwrite
	$(TRAIN) synth covid_ct --preset demo --preset-section synth_test \
		--out $(COVID_CT_TEST) --overwrite
	$(TRAIN) train covid_ct --preset demo --data $(COVID_CT_DATA) --test-data $(COVID_CT_TEST) \
		--out models --version 1.2.0 --overwrite

## Brain MRI FLAIR lesion segmentation (brain_tumor_mri): a slim U-Net at 128x128 on 1800
## synthetic kaggle_3m slices.
BRAIN_DATA ?= data/brain_mri
BRAIN_TEST ?= data/brain_mri_test
models-brain: $(VENV)/.all-installed
	$(TRAIN) synth brain_tumor_mri --preset demo --out $(BRAIN_DATA) --overwrite
	$(TRAIN) synth brain_tumor_mri --preset demo --preset-section synth_test \
		--out $(BRAIN_TEST) --overwrite
	$(TRAIN) train brain_tumor_mri --preset demo --data $(BRAIN_DATA) --test-data $(BRAIN_TEST) \
		--out models --version 1.2.0 --overwrite

## X-ray phantom tumour tracking (phantom_tumor_xray): first the window-vs-percentile
## normalisation study, then the demo model (on 2 CPU cores: data about 10 minutes, study
## about 12, training about 45).
PHANTOM_DATA ?= data/phantom_xray
NPROC ?= $(shell nproc 2>/dev/null || echo 1)
PHANTOM_TEST ?= data/phantom_xray_test
models-phantom: $(VENV)/.all-installed
	$(TRAIN) synth phantom_tumor_xray --preset demo --out $(PHANTOM_DATA) \
		--workers $(NPROC) --overwrite
	$(TRAIN) synth phantom_tumor_xray --preset demo --preset-section synth_test \
		--out $(PHANTOM_TEST) --workers $(NPROC) --overwrite
	$(TRAIN) study phantom_tumor_xray --preset demo --data $(PHANTOM_DATA) \
		--out runs/phantom_norm_study/study.json
	$(TRAIN) train phantom_tumor_xray --preset demo --data $(PHANTOM_DATA) \
		--test-data $(PHANTOM_TEST) --out models --version 1.3.0 --overwrite

## The container acceptance run with podman (root; needs podman, runc, debootstrap): makes the
## local base image if missing, builds localhost/medserve, localhost/medserve-integration and
## localhost/medserve-orthanc, runs the runtime image as docker-compose.yml does and tests it,
## then the PACS profile with podman-compose (deploy/container_test.py).
container-test:
	python3 deploy/container_test.py

## Only the local Debian 12 base image (localhost/medserve-base:bookworm), without a registry.
container-base:
	deploy/make-base-image.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
