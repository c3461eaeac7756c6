"""``rmseg-tables``: the paper's tables (and the registered extended ones) from run folders.

    python -m rmseg.cli.tables --runs results/runs/cpu --out results/tables/cpu [--table table1]

Tables are built by ``rmseg.reporting.tables`` from each run's ``summary.json`` (read through
``rmseg.evaluation.records``); the spec modules of ``SPEC_MODULES`` register their tables first.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from rmseg.reporting import tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-tables", description=tables.__doc__.splitlines()[0])
    parser.add_argument("--runs", help="one runs root (default: every runs root under results/runs)")
    parser.add_argument("--out", default="results/tables", help="output folder (default: results/tables; "
                        "without --runs, each root's tables go to the same relative folder under it)")
    parser.add_argument("--table", action="append", help=f"table(s) to build (default: all of {list(tables.TABLES)} that "
                        "have baseline runs; with --runs and --table, built even without)")
    args = parser.parse_args(argv)
    for module in tables.SPEC_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    unknown = [n for n in args.table or [] if n not in tables.TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {list(tables.TABLES)}")
    specs = [tables.TABLES[n] for n in args.table or tables.TABLES]
    runs = Path(args.runs or "results/runs")
    if not runs.is_dir():
        print(f"rmseg-tables: runs root {runs} does not exist; train first (make demo / make reproduce-gs)", file=sys.stderr)
        return 2
    if args.runs:
        jobs = [(runs, Path(args.out), specs if args.table else [s for s in specs if tables.has_runs(runs, s.baseline_experiment)])]
    else:
        jobs = [(root, Path(args.out) / root.relative_to(runs), found) for root, found in tables.find_runs_roots(runs, specs).items()]
    if not any(found for _, _, found in jobs):
        print(f"rmseg-tables: no baseline runs of {[s.name for s in specs]} under {runs}; train first", file=sys.stderr)
        return 2
    try:
        for root, out, found in jobs:
            for spec in found:
                print(tables.write_table(spec, root, out))
                print(f"written {out / spec.name}.md/.csv/.tex from {root}\n")
    except ValueError as err:
        print(f"rmseg-tables: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
