# medserve — the two commands are `make run` and `make test`.
PYTHON ?= python3.11
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
	$(BIN)/mypy app

format: $(VENV)/.all-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Train the demo model(s) on synthetic data into models/ (CPU, about 10-15 minutes).
## Generated data go to data/ (git-ignored); the test set uses a different seed.
PNEUMONIA_DATA ?= data/pneumonia_xray
PNEUMONIA_TEST ?= data/pneumonia_xray_test
models: models-ct
models: models-brain
models: models-phantom
models: $(VENV)/.all-installed
	$(BIN)/medserve-train synth pneumonia --out $(PNEUMONIA_DATA) --n 2400 --seed 1 --overwrite
	$(BIN)/medserve-train synth pneumonia --out $(PNEUMONIA_TEST) --n 500 --seed 2 \
		--test-fraction 0.9 --overwrite
	$(BIN)/medserve-train train pneumonia --data $(PNEUMONIA_DATA) --test-data $(PNEUMONIA_TEST) \
		--out models --version 1.1.0 --arch cnn --width 0.5 --size 128 --channels 1 \
		--epochs 25 --patience 6 --batch-size 32 --seed 1 --synthetic --overwrite

## COVID-19 chest CT (covid_ct): CT-0 vs CT-2+CT-3 volumes at 128 px, a 3D CNN at 32x64x64
## (about 15-20 minutes on 2 CPU cores); the held-out test set uses another seed.
COVID_CT_DATA ?= data/covid_ct
COVID_CT_TEST ?= data/covid_ct_test
models-ct: $(VENV)/.all-installed
	$(BIN)/medserve-train synth covid_ct --out $(COVID_CT_DATA) --n 900 --seed 1 \
		--volume-size 128 --categories CT-0 CT-2 CT-3 --preview docs/covid_ct_preview.png --overwrite
	$(BIN)/medserve-train synth covid_ct --out $(COVID_CT_TEST) --n 400 --seed 2 \
		--volume-size 128 --categories CT-0 CT-2 CT-3 --overwrite
	$(BIN)/medserve-train train covid_ct --data $(COVID_CT_DATA) --test-data $(COVID_CT_TEST) \
		--out models --version 1.1.0 --volume-shape 32 64 64 --width 0.5 --epochs 15 \
		--patience 5 --batch-size 8 --seed 1 --threads 2 --synthetic --overwrite

## Brain MRI FLAIR lesion segmentation (brain_tumor_mri): a slim U-Net (4 levels, 16 base
## filters) at 128x128 on 1800 synthetic kaggle_3m slices; the held-out test set uses another seed.
BRAIN_DATA ?= data/brain_mri
BRAIN_TEST ?= data/brain_mri_test
models-brain: $(VENV)/.all-installed
	$(BIN)/medserve-train synth brain_mri --out $(BRAIN_DATA) --n 1800 --seed 1 --overwrite
	$(BIN)/medserve-train synth brain_mri --out $(BRAIN_TEST) --n 500 --seed 2 --overwrite
	$(BIN)/medserve-train train brain_mri --data $(BRAIN_DATA) --test-data $(BRAIN_TEST) \
		--out models --version 1.1.0 --size 128 --base-filters 16 --depth 4 --dropout 0.1 \
		--loss bce_dice --epochs 12 --patience 4 --batch-size 16 --seed 1 --threads 2 \
		--synthetic --overwrite

## X-ray phantom tumour tracking (phantom_tumor_xray): 16-bit 768x1024 frames, a slim ResNet-18
## segmenter at 192x256; first the window-vs-percentile normalisation study (at 96x128), then
## the demo model; the held-out test set uses another seed. On 2 CPU cores: data about 10
## minutes, study about 12, training about 45 (1200 frames, 45 epochs).
PHANTOM_DATA ?= data/phantom_xray
NPROC ?= $(shell nproc 2>/dev/null || echo 1)
PHANTOM_TEST ?= data/phantom_xray_test
models-phantom: $(VENV)/.all-installed
	$(BIN)/medserve-train synth phantom --out $(PHANTOM_DATA) --n 1200 --seed 1 \
		--frames-per-sequence 2 5 --workers $(NPROC) --overwrite
	$(BIN)/medserve-train synth phantom --out $(PHANTOM_TEST) --n 200 --seed 2 \
		--workers $(NPROC) --overwrite
	$(BIN)/python -m training.phantom_pipeline study --data $(PHANTOM_DATA) \
		--out runs/phantom_norm_study/study.json --input-size 96 128 --epochs 12 --seed 1
	$(BIN)/medserve-train train phantom --data $(PHANTOM_DATA) --test-data $(PHANTOM_TEST) \
		--out models --version 1.1.0 --input-size 192 256 --base-filters 16 --depth 4 \
		--normalisation percentile --normalisation-study runs/phantom_norm_study/study.json \
		--max-shift 0.1 --epochs 45 --patience 10 --batch-size 8 --seed 1 --threads 2 \
		--synthetic --overwrite

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
