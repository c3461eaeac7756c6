# rmseg: every target sets itself up on first use (`make setup` runs once, stamped).
PY      := .venv/bin/python
STAMP   := .venv/.rmseg-setup-stamp
DATA    ?= $(or $(RMSEG_DATA_ROOT),../shared/data)
SEEDS   ?= 0,1,2

.DEFAULT_GOAL := help
.PHONY: help setup demo test tables figures reproduce-gs reproduce-la reproduce-extended data bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-20s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install rmseg (editable) with its test extras, once

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## both tables end to end on synthetic stand-ins (reduced trainer), printed
	$(PY) -m rmseg.demo

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

tables: $(STAMP)  ## rebuild Tables 1 and 2 from run summaries into results/tables/
	$(PY) -m rmseg.tables

figures: $(STAMP)  ## contour overlays (paper Fig. 2 and 3) into results/figures/
	$(PY) -m rmseg.figures

data: $(STAMP)  ## download (when the network allows), verify and prepare the real data
	$(PY) scripts/download_data.py

bench: $(STAMP)  ## run every benchmark on the present device into results/benchmarks/
	$(PY) benchmarks/run_all.py

clean:  ## remove the virtual environment and caches (never results)
	rm -rf .venv .pytest_cache
