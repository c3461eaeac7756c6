"""``make sweep-alpha``'s report: the RM weight dose-response table and figure of a runs root.

    python -m rmseg.cli.alpha_sweep --runs results/runs/cpu --table table1

Built by ``rmseg.reporting.alpha_sweep``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rmseg.reporting import alpha_sweep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-alpha-sweep", description=alpha_sweep.__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="the protocol's runs root, e.g. results/runs/cpu")
    parser.add_argument("--table", required=True, choices=sorted(alpha_sweep.SPECS))
    parser.add_argument("--figures", default=None, help="figure folder (default: results/figures/<protocol>)")
    parser.add_argument("--tables", default=None, help="table folder (default: results/tables/<protocol>)")
    args = parser.parse_args(argv)
    runs, spec = Path(args.runs), alpha_sweep.SPECS[args.table]
    df = alpha_sweep.collect(runs, spec)
    if df.empty or (df["row"] == spec.baseline).all():
        print(f"rmseg-alpha-sweep: no swept point of {spec.name} under {runs / alpha_sweep.SWEEP_DIR}: run make sweep-alpha first",
              file=sys.stderr)
        return 2
    protocol = runs.name if runs.name != "runs" else "paper"
    figures = Path(args.figures or f"results/figures/{protocol}")
    tables = Path(args.tables or f"results/tables/{protocol}")
    tables.mkdir(parents=True, exist_ok=True)
    markdown = alpha_sweep.render_markdown(spec, df)
    for suffix, text in (("md", markdown + "\n"), ("csv", df.to_csv(index=False))):
        path = tables / f"alpha_{args.table}.{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(markdown)
    print(f"wrote {alpha_sweep.plot(spec, df, figures / f'alpha_{args.table}.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
