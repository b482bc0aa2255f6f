# calcimeasure — set-up and common tasks. Everything runs in a local virtual
# environment (.venv) created from the machine's python3 (>= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= auto

.PHONY: setup demo test test-fast sample-images chromium report-screenshot bench-batch clean help

help:
	@echo "make demo              set up .venv; study sample_images/ into results/sample_images/ (report.html)"
	@echo "make test              set up .venv (and Chromium, for the report test) and run the whole test suite"
	@echo "make chromium          install Debian's chromium if missing (root), for scripts/check_report.py"
	@echo "make report-screenshot demo, then look at its report.html in headless Chromium -> docs/report_screenshot.png"
	@echo "make bench-batch       throughput of 'calcimeasure study' (jobs 1, 2, Dask) -> docs/performance_batch.md"
	@echo "make sample-images     regenerate sample_images/ from the phantom generator"

# constraints.txt pins the tested environment (exact versions): a new upstream release cannot change the
# bundled samples' regeneration or the documented figures under CI. `pip install .` alone takes the newest.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "calcimeasure needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/calcimeasure study sample_images --out results/sample_images --resume
	@echo "report: results/sample_images/report.html (tables: measurements.csv, lesions.csv, changes.csv, lesion_changes.csv, groups.csv, errors.csv)"

# The report test looks at report.html in headless Chromium; CI runs as root on Debian.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then \
		echo "chromium: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: installing Debian's package (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium: missing; install it (Debian: sudo apt-get install chromium) or set CHROMIUM=/path/to/chrome"; \
		echo "          tests/test_report.py fails without it"; \
	fi

# --dist loadfile: a module's fixtures (the sample study, the resume reference, ...) are built once, not per worker.
test: setup chromium
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile

report-screenshot: demo chromium
	$(BIN)/python scripts/check_report.py results/sample_images/report.html --screenshot docs/report_screenshot.png

bench-batch: setup
	$(BIN)/python benchmarks/bench_batch.py --write-section docs/performance_batch.md

sample-images: setup
	$(BIN)/python -m calcimeasure.phantom --out sample_images

clean:
	rm -rf $(VENV) .pytest_cache build dist
