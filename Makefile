# calcimeasure — set-up and common tasks. Everything runs in a local virtual
# environment (.venv) created from the machine's python3 (>= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= auto

.PHONY: setup demo test test-fast sample-images clean help

help:
	@echo "make demo           set up .venv and measure sample_images/ into results/sample_images/"
	@echo "make test           set up .venv and run the whole test suite"
	@echo "make sample-images  regenerate sample_images/ from the phantom generator"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "calcimeasure needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/calcimeasure info sample_images
	$(BIN)/calcimeasure measure sample_images --out results/sample_images --resume
	@echo "tables and overlays: results/sample_images/ (measurements.csv, lesions.csv, errors.csv, overlays/)"

test: setup
	$(BIN)/python -m pytest -n $(JOBS)

sample-images: setup
	$(BIN)/python -m calcimeasure.phantom --out sample_images

clean:
	rm -rf $(VENV) .pytest_cache build dist
