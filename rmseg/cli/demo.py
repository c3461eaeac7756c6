"""make demo: Tables 1 and 2 end to end on the synthetic stand-ins with a reduced trainer, printed.

Every row of Table 1 and of Table 2 (V-Net, RM and the rival losses whose experiment files exist) is
trained with its own experiment config under the demo protocol (``protocol=demo``: small images and
patches, narrow networks, a few dozen to a few hundred iterations) on synthetic data written on first use, one seed. The runs go to
``results/demo/runs/`` (completed runs are skipped on the next call: delete that folder to re-run), the
tables to ``results/demo/tables/``. The numbers show the pipeline works; they say nothing about the
paper's results (use ``make reproduce-gs`` / ``make reproduce-la`` on the real data).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from rmseg.reporting import tables
from rmseg.config import compose_config, experiment_names
from rmseg.cli.train import train

#: The synthetic stand-in each table runs on; everything else is the demo protocol (configs/protocol/demo.yaml).
DATA = {"table1": "data=gs_synthetic", "table2": "data=la_synthetic"}
COMMON = ["protocol=demo", "seed=0"]


def run_demo(results_dir: str = "results/demo", families: Sequence[str] = ("table1", "table2"),
             max_iters: int | None = None, data_dir: str = "data") -> list[str]:
    """Train and evaluate every row of ``families``; return the tables as Markdown."""
    extra = [] if max_iters is None else [f"trainer.max_iters={max_iters}"]
    for family in families:
        for experiment in experiment_names(family):
            started = time.perf_counter()
            cfg = compose_config([f"experiment={experiment}", DATA[family], *COMMON, *extra,
                                  f"paths.results_dir={results_dir}", f"paths.data_dir={data_dir}"])
            final = train(cfg)
            state = "skipped (complete)" if final is None else f"{time.perf_counter() - started:5.1f} s"
            print(f"  {experiment:<22} {state}", flush=True)
    runs, out = f"{results_dir}/runs", f"{results_dir}/tables"
    markdown = []
    for family in families:
        markdown.append(tables.write_table(tables.TABLES[family], runs, out))
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/demo", help="results folder (default: results/demo)")
    parser.add_argument("--data-dir", default="data", help="synthetic stand-ins written/read here (default: data)")
    parser.add_argument("--table", action="append", choices=sorted(DATA), help="table(s) to run (default: both)")
    parser.add_argument("--iters", type=int, default=None, help="iterations per run (default: 200 for Table 1, 40 for Table 2)")
    args = parser.parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # per-iteration INFO goes to each run's train.log only
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    started = time.perf_counter()
    print(f"rmseg demo: synthetic stand-ins, reduced trainer; runs in {args.results}/runs", flush=True)
    for markdown in run_demo(args.results, args.table or sorted(DATA), args.iters, args.data_dir):
        print("\n" + markdown)
    print(f"demo finished in {time.perf_counter() - started:.0f} s; tables in {args.results}/tables/ "
          "(synthetic data: the numbers test the pipeline, not the paper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
