# rmseg: every target sets itself up on first use (`make setup` runs once, stamped).
PY      := .venv/bin/python
STAMP   := .venv/.rmseg-setup-stamp
DATA    ?= $(or $(RMSEG_DATA_ROOT),../shared/data)
SEEDS   ?= 0,1,2

.DEFAULT_GOAL := help
.PHONY: help setup demo test tables figures reproduce-gs reproduce-la reproduce-extended reproduce-cpu data bench gpu-bundle clean

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
	$(PY) -m rmseg.demo

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

tables: $(STAMP)  ## rebuild Tables 1 and 2 from run summaries into results/tables/
	$(PY) -m rmseg.tables

figures: $(STAMP)  ## contour overlays (paper Fig. 2 and 3) into results/figures/
	$(PY) -m rmseg.figures

TABLE1_ROWS := $(shell cd configs/experiment && ls table1/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)
TABLE2_ROWS := $(shell cd configs/experiment && ls table2/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)

reproduce-gs: $(STAMP)  ## Table 1: every row x SEEDS with the paper's protocol on Drishti-GS (DATA=), then tables and figures
	@test -d "$(DATA)/drishti-gs1" || { echo "reproduce-gs: no drishti-gs1/ under DATA=$(DATA); get it with 'make data' or pass DATA=/path/holding/drishti-gs1"; exit 2; }
	RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.train --multirun experiment=$(TABLE1_ROWS) seed=$(SEEDS)
	$(PY) -m rmseg.tables --table table1
	$(PY) -m rmseg.figures

reproduce-la: $(STAMP)  ## Table 2: every row x SEEDS with the comparison's protocol on LA 2018 (DATA=), then tables and figures
	@test -d "$(DATA)/la2018" || { echo "reproduce-la: no la2018/ under DATA=$(DATA); get it with 'make data' or pass DATA=/path/holding/la2018"; exit 2; }
	RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.train --multirun experiment=$(TABLE2_ROWS) seed=$(SEEDS)
	$(PY) -m rmseg.tables --table table2
	$(PY) -m rmseg.figures

EXTENDED := $(shell cd configs/experiment && ls extended/*.yaml 2>/dev/null | sed 's/\.yaml$$//' | paste -sd, -)

reproduce-extended: $(STAMP)  ## every loss (CE+Dice, RM, boundary, HD, SDF, region-wise, adaptive region) on both datasets, then the extended tables
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "reproduce-extended: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	RMSEG_DATA_ROOT=$(abspath $(DATA)) $(PY) -m rmseg.train --multirun experiment=$(EXTENDED) seed=$(SEEDS)
	$(PY) -m rmseg.tables --table extended_gs --table extended_la

reproduce-cpu: $(STAMP)  ## reduced CPU protocol of both tables on the real data (results/REPORT.md), tables and figures
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "reproduce-cpu: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	DATA=$(abspath $(DATA)) scripts/reproduce_cpu.sh table1 & first=$$!; DATA=$(abspath $(DATA)) scripts/reproduce_cpu.sh table2; second=$$?; wait $$first && test $$second -eq 0
	DATA=$(abspath $(DATA)) scripts/reproduce_cpu.sh table1_sum & first=$$!; DATA=$(abspath $(DATA)) scripts/reproduce_cpu.sh table2_sum; second=$$?; wait $$first && test $$second -eq 0
	DATA=$(abspath $(DATA)) ROW=$(or $(ROW),rm20) scripts/reproduce_cpu.sh ablation
	DATA=$(abspath $(DATA)) SEEDS="0 1 2" scripts/reproduce_cpu.sh table2_long
	scripts/reproduce_cpu.sh report

data: $(STAMP)  ## download (when the network allows), verify and prepare the real data
	$(PY) scripts/download_data.py

bench: $(STAMP)  ## run every benchmark on the present device into results/benchmarks/
	$(PY) benchmarks/run_all.py

gpu-bundle: $(STAMP)  ## wheels and compact real data (DATA=) for a GPU machine without network, into build/gpu/ (docs/gpu.md)
	@for d in drishti-gs1 la2018; do test -d "$(DATA)/$$d" || { echo "gpu-bundle: no $$d/ under DATA=$(DATA) (both drishti-gs1/ and la2018/ are needed); get them with 'make data' or pass DATA=/path/holding/both"; exit 2; }; done
	$(PY) -m benchmarks.gpu.bundle --data $(abspath $(DATA)) --out build/gpu

clean:  ## remove the virtual environment and caches (never results)
	rm -rf .venv .pytest_cache
