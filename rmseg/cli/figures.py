"""``rmseg-figures``: contour overlays of the best RM row against the baseline (paper Fig. 2 and 3).

    python -m rmseg.cli.figures --runs results/runs/cpu --out results/figures/cpu

Drawn by ``rmseg.reporting.figures`` from the predictions saved in run folders.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rmseg.reporting import figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-figures", description=figures.__doc__.splitlines()[0])
    parser.add_argument("--runs", help="one runs root (default: every runs root under results/runs)")
    parser.add_argument("--out", default="results/figures", help="output folder (default: results/figures; "
                        "without --runs, each root's figures go to the same relative folder under it)")
    parser.add_argument("--cases", type=int, default=2, help="cases per figure family (default 2)")
    args = parser.parse_args(argv)
    runs = Path(args.runs or "results/runs")
    if not runs.is_dir():
        print(f"rmseg-figures: runs root {runs} does not exist; train first (make demo / make reproduce-gs)", file=sys.stderr)
        return 2
    if args.runs:
        jobs = [(runs, Path(args.out))]
    else:
        roots = figures.find_runs_roots(runs, [spec for spec, _ in figures.FIGURES])
        jobs = [(root, Path(args.out) / root.relative_to(runs)) for root in roots]
    lacking = []
    for root, out in jobs:
        written, missing, not_drawn = figures.build_figures(root, out, max_cases=args.cases)
        for path in written:
            print(f"wrote {path}")
        for reason in not_drawn:
            print(f"not drawn: {reason}")
        lacking += missing
    for reason in lacking:
        print(f"rmseg-figures: cannot draw {reason}", file=sys.stderr)
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
