#!/usr/bin/env bash
# The small protocol (configs/protocol/small.yaml) for Tables 1 and 2 on the real data (make reproduce-small).
# What it reduces is in configs/protocol_data/small_*.yaml and results/REPORT.md. Its Table 1 is the
# baseline of the RM weight sweep (make sweep-alpha PROTOCOL=small), which replaced its ablations of the
# RM reduction and alpha.
#
#   scripts/reproduce_small.sh table1        # Table 1: every row x seeds 0,1,2 (RM: mean over pixels)
#   scripts/reproduce_small.sh table2        # Table 2: V-Net, RM3, RM4 rows, seed 0 (RM: mean over voxels)
#   scripts/reproduce_small.sh report        # tables from the runs
#
# Every run continues from its checkpoint after an interruption (resume=true) and completed runs are
# skipped, so re-running a part finishes it. DATA= names the folder holding drishti-gs1/ and la2018/
# (default ../shared/data); THREADS= the CPU threads per run (default 1: the two tables side by side).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
DATA=${DATA:-${RMSEG_DATA_ROOT:-../shared/data}}
THREADS=${THREADS:-1}
RUNS=results/runs/small  # the protocol's own folder (configs/protocol/small.yaml)

COMMON=(protocol=small resume=true "trainer.num_threads=$THREADS" trainer.progress_bar=false trainer.tensorboard=false)
TABLE1_RM_ROWS=table1/mse,table1/rm10,table1/rm10_01,table1/rm20,table1/rm20_02,table1/rm20_02_22
TABLE2_RM_ROWS=table2/rm3,table2/rm4

train() {  # one run per call, resumed or skipped when done
    RMSEG_DATA_ROOT="$(cd "$DATA" && pwd)" "$PY" -m rmseg.cli.train "$@" "${COMMON[@]}"
}

train_rows() {  # train_rows ROW1,ROW2,... OVERRIDES...: one run per row
    local rows=$1; shift
    for row in ${rows//,/ }; do train "experiment=$row" "$@"; done
}

case "${1:-}" in
    table1)
        for seed in 0 1 2; do
            train_rows "table1/unet,$TABLE1_RM_ROWS" "seed=$seed"
        done ;;
    table2)
        train_rows "table2/vnet,$TABLE2_RM_ROWS" seed=0 ;;
    report)
        "$PY" -m rmseg.cli.tables --runs "$RUNS" --out results/tables/small --table table1 --table table2
        "$PY" -m rmseg.cli.figures --runs "$RUNS" --out results/figures/small ;;
    *)
        echo "usage: $0 table1 | table2 | report" >&2
        exit 2 ;;
esac
