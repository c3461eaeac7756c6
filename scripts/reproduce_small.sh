#!/usr/bin/env bash
# The small protocol (configs/protocol/small.yaml) for Tables 1 and 2 on the real data, with its ablations
# (make reproduce-small). What it reduces is in configs/protocol_data/small_*.yaml and results/REPORT.md.
#
#   scripts/reproduce_small.sh table1        # Table 1: every row x seeds 0,1,2 (RM: mean over pixels)
#   ROWS=rm20 scripts/reproduce_small.sh table1_sum   # Table 1's RM rows (default all) with the sum over pixels (Eq. 4)
#   scripts/reproduce_small.sh table2        # Table 2: V-Net, RM3, RM4 rows, seed 0 (RM: mean over voxels)
#   ROWS=rm4 scripts/reproduce_small.sh table2_sum    # Table 2's RM rows (default rm3,rm4) with the sum over voxels
#   scripts/reproduce_small.sh table2_long   # Table 2 as table2 but 3000 iterations (lr step after 1250), own folder
#   ROW=rm20 scripts/reproduce_small.sh ablation   # RM summed over pixels with alpha 0.1 and 0.01 on one row, 3 seeds
#   scripts/reproduce_small.sh report        # tables and figures from the runs
#
# Every run continues from its checkpoint after an interruption (resume=true) and completed runs are
# skipped, so re-running a part finishes it. DATA= names the folder holding drishti-gs1/ and la2018/
# (default ../shared/data); THREADS= the CPU threads per run (default 1: the two tables side by side).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
DATA=${DATA:-${RMSEG_DATA_ROOT:-../shared/data}}
THREADS=${THREADS:-1}
RUNS=results/runs/small                 # the protocol's own folder (configs/protocol/small.yaml)
RUNS_SUM=results/runs/small_rm_sum      # Table 1's RM rows with the sum over pixels
RUNS_ALPHA=results/runs/small_rm_alpha  # alpha ablation (RM summed over pixels)
RUNS_LA_LONG=results/runs/small_la3000  # Table 2 with three times the iterations

COMMON=(protocol=small resume=true "trainer.num_threads=$THREADS" trainer.progress_bar=false trainer.tensorboard=false)
TABLE1_RM_ROWS=table1/mse,table1/rm10,table1/rm10_01,table1/rm20,table1/rm20_02,table1/rm20_02_22
TABLE2_RM_ROWS=table2/rm3,table2/rm4
# Table 2 with 3000 iterations and the lr step after 1250 (2500 of 6000 scaled); otherwise the small protocol
TABLE2_LONG=(trainer.max_iters=3000 optim.lr_step_iters=1250)

train() {  # one run per call: an override of loss.terms.0 cannot go through a multirun's base config
    RMSEG_DATA_ROOT="$(cd "$DATA" && pwd)" "$PY" -m rmseg.cli.train "$@" "${COMMON[@]}"
}

train_rows() {  # train_rows ROW1,ROW2,... OVERRIDES...: one run per row
    local rows=$1; shift
    for row in ${rows//,/ }; do train "experiment=$row" "$@"; done
}

rows() {  # rows TABLE DEFAULT: ROWS=a,b as TABLE/a,TABLE/b, else DEFAULT
    if [ -n "${ROWS:-}" ]; then echo "$1/${ROWS//,/,$1/}"; else echo "$2"; fi
}

case "${1:-}" in
    table1)
        for seed in 0 1 2; do
            train_rows "table1/unet,$TABLE1_RM_ROWS" "seed=$seed"
        done ;;
    table1_sum)
        for seed in 0 1 2; do
            train_rows "$(rows table1 "$TABLE1_RM_ROWS")" "seed=$seed" "paths.runs_dir=$RUNS_SUM" \
                ++loss.terms.0.pixel_reduction=sum
        done
        # the baseline row is the same runs as in $RUNS (CE + Dice has no RM term)
        mkdir -p "$RUNS_SUM/table1" && ln -sfn ../../small/table1/unet "$RUNS_SUM/table1/unet" ;;
    table2)
        train_rows "table2/vnet,$TABLE2_RM_ROWS" seed=0 ;;
    table2_sum)
        train_rows "$(rows table2 "$TABLE2_RM_ROWS")" seed=0 "paths.runs_dir=$RUNS_SUM" \
            ++loss.terms.0.pixel_reduction=sum
        mkdir -p "$RUNS_SUM/table2" && ln -sfn ../../small/table2/vnet "$RUNS_SUM/table2/vnet" ;;
    table2_long)  # the three rows side by side, one process each; SEEDS="0 1 2" for more seeds (default 0)
        pids=()
        for row in table2/vnet $(echo "$TABLE2_RM_ROWS" | tr , ' '); do
            (for seed in ${SEEDS:-0}; do
                 train "experiment=$row" "seed=$seed" "${TABLE2_LONG[@]}" "paths.runs_dir=$RUNS_LA_LONG"
             done) & pids+=($!)
        done
        status=0; for pid in "${pids[@]}"; do wait "$pid" || status=1; done
        exit $status ;;
    ablation)
        # the mean over the 128 x 128 pixels is the sum with alpha / 16384: these fill in between
        for alpha in 0.1 0.01; do
            for seed in 0 1 2; do
                train "experiment=table1/${ROW:?ROW= names the Table 1 row, e.g. ROW=rm20}" "seed=$seed" "loss.alpha=$alpha" \
                    ++loss.terms.0.pixel_reduction=sum "paths.runs_dir=$RUNS_ALPHA/alpha$alpha"
            done
            mkdir -p "$RUNS_ALPHA/alpha$alpha/table1" && ln -sfn ../../../small/table1/unet "$RUNS_ALPHA/alpha$alpha/table1/unet"
        done ;;
    report)
        "$PY" -m rmseg.cli.tables --runs "$RUNS" --out results/tables/small --table table1 --table table2
        "$PY" -m rmseg.cli.tables --runs "$RUNS_SUM" --out results/tables/small_rm_sum --table table1 --table table2
        for dir in "$RUNS_ALPHA"/alpha*; do
            [ -d "$dir" ] && "$PY" -m rmseg.cli.tables --runs "$dir" --out "results/tables/small_rm_alpha/$(basename "$dir")" --table table1
        done
        if [ -d "$RUNS_LA_LONG" ]; then
            "$PY" -m rmseg.cli.tables --runs "$RUNS_LA_LONG" --out results/tables/small_la3000 --table table2
        fi
        "$PY" -m rmseg.cli.figures --runs "$RUNS" --out results/figures/small
        "$PY" -m rmseg.cli.figures --runs "$RUNS_SUM" --out results/figures/small_rm_sum
        if [ -d "$RUNS_LA_LONG" ]; then
            "$PY" -m rmseg.cli.figures --runs "$RUNS_LA_LONG" --out results/figures/small_la3000
        fi ;;
    *)
        echo "usage: $0 table1 | table1_sum | table2 | table2_sum | table2_long | ablation | report" >&2
        exit 2 ;;
esac
