# rmseg: every target sets itself up on first use (`make setup` runs once, stamped).
PY      := .venv/bin/python
STAMP   := .venv/.rmseg-setup-stamp
DATA    ?= $(or $(RMSEG_DATA_ROOT),../shared/data)
SEEDS   ?= 0,1,2
PROTOCOL ?= paper
ARGS    ?=
# a protocol's runs, tables and figures: results/<kind>/ for the paper's, results/<kind>/<protocol>/ for another
SUB     := $(if $(filter paper,$(PROTOCOL)),,/$(PROTOCOL))
# interrupted runs continue and completed ones are skipped, so re-running the same command finishes a table
TRAIN   = RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.cli.train --multirun protocol=$(PROTOCOL) resume=true
# before a sweep: device, protocol, runs left and their estimated duration (a warning for paper on a CPU)
PREFLIGHT = RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.cli.preflight protocol=$(PROTOCOL)
REPORT  = $(PY) -m rmseg.cli.tables --runs results/runs$(SUB) --out results/tables$(SUB)
FIGURES = $(PY) -m rmseg.cli.figures --runs results/runs$(SUB) --out results/figures$(SUB)

.DEFAULT_GOAL := help
.PHONY: help setup demo test tables figures reproduce-gs reproduce-la reproduce-extended reproduce-small sweep-alpha data bench gpu-bundle clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-20s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install rmseg (editable) with its test and cluster extras, once

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,cluster]'
	touch $(STAMP)

demo: $(STAMP)  ## both tables end to end on synthetic stand-ins (reduced trainer), printed
	$(PY) -m rmseg.cli.demo

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

tables: $(STAMP)  ## rebuild the tables of every runs root under results/runs/ into results/tables/
	$(PY) -m rmseg.cli.tables

figures: $(STAMP)  ## contour overlays (paper Fig. 2 and 3) into results/figures/ (images from DATA=)
	RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.cli.figures

TABLE1_ROWS := $(shell cd configs/experiment && ls table1/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)
TABLE2_ROWS := $(shell cd configs/experiment && ls table2/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)

reproduce-gs: $(STAMP)  ## Table 1: every row x SEEDS on Drishti-GS (DATA=, PROTOCOL=paper|cpu|small, ARGS=overrides), tables, figures
	@test -d "$(DATA)/drishti-gs1" || { echo "reproduce-gs: no drishti-gs1/ under DATA=$(DATA); get it with 'make data' or pass DATA=/path/holding/drishti-gs1"; exit 2; }
	$(PREFLIGHT) experiment=$(TABLE1_ROWS) seed=$(SEEDS) $(ARGS)
	$(TRAIN) experiment=$(TABLE1_ROWS) seed=$(SEEDS) $(ARGS)
	$(REPORT) --table table1
	$(FIGURES)

reproduce-la: $(STAMP)  ## Table 2: every row x SEEDS on LA 2018 (DATA=, PROTOCOL=paper|cpu|small, ARGS=overrides), tables, figures
	@test -d "$(DATA)/la2018" || { echo "reproduce-la: no la2018/ under DATA=$(DATA); get it with 'make data' or pass DATA=/path/holding/la2018"; exit 2; }
	$(PREFLIGHT) experiment=$(TABLE2_ROWS) seed=$(SEEDS) $(ARGS)
	$(TRAIN) experiment=$(TABLE2_ROWS) seed=$(SEEDS) $(ARGS)
	$(REPORT) --table table2
	$(FIGURES)

EXTENDED := $(shell cd configs/experiment && ls extended/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)

reproduce-extended: $(STAMP)  ## every loss (CE+Dice, RM, boundary, HD, SDF, region-wise, adaptive region) on both datasets, then the extended tables
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "reproduce-extended: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	$(PREFLIGHT) experiment=$(EXTENDED) seed=$(SEEDS) $(ARGS)
	$(TRAIN) experiment=$(EXTENDED) seed=$(SEEDS) $(ARGS)
	$(REPORT) --table extended_gs --table extended_la

SWEEP_ROW    = $(or $(ROW),table1/rm20_02_22)
SWEEP_TABLE  = $(firstword $(subst /, ,$(SWEEP_ROW)))
SWEEP_BASE   = $(if $(filter table2,$(SWEEP_TABLE)),table2/vnet,table1/unet)
ALPHAS      ?= 1,10,100,1000,10000,100000,1000000

sweep-alpha: $(STAMP)  ## RM weight dose-response: ROW (default table1/rm20_02_22) over ALPHAS x SEEDS and its baseline (DATA=, PROTOCOL=, ARGS=), figure and table
	@d=$(if $(filter table2,$(SWEEP_TABLE)),la2018,drishti-gs1); test -d "$(DATA)/$$d" || { echo "sweep-alpha: no $$d/ under DATA=$(DATA); get it with 'make data' or pass DATA=/path/holding/$$d"; exit 2; }
	$(TRAIN) experiment=$(SWEEP_ROW) 'name=alpha_sweep/$(SWEEP_ROW)/alpha$${loss.alpha}' loss.alpha=$(ALPHAS) seed=$(SEEDS) $(ARGS)
	$(TRAIN) experiment=$(SWEEP_BASE) seed=$(SEEDS) $(ARGS)
	$(PY) -m rmseg.cli.alpha_sweep --runs results/runs$(SUB) --table $(SWEEP_TABLE) --figures results/figures$(SUB) --tables results/tables$(SUB)

reproduce-small: $(STAMP)  ## the small protocol of both tables (results/REPORT.md; the sweep's Table 1 baseline)
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "reproduce-small: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	DATA=$(abspath $(DATA)) scripts/reproduce_small.sh table1 & first=$$!; DATA=$(abspath $(DATA)) scripts/reproduce_small.sh table2; second=$$?; wait $$first && test $$second -eq 0
	scripts/reproduce_small.sh report

data: $(STAMP)  ## download (when the network allows), verify and prepare the real data into DATA=
	$(PY) scripts/download_data.py --root $(abspath $(DATA))

bench: $(STAMP)  ## run every benchmark on the present device into results/benchmarks/
	$(PY) benchmarks/run_all.py

gpu-bundle: $(STAMP)  ## wheels and compact real data (DATA=) for a GPU machine without network, into build/gpu/ (docs/gpu.md)
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "gpu-bundle: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	$(PY) -m benchmarks.gpu.bundle --data $(abspath $(DATA)) --out build/gpu

clean:  ## remove the virtual environment and caches (never results)
	rm -rf .venv .pytest_cache
