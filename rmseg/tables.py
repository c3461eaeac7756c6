"""Paper tables rebuilt from run summaries only (``rmseg-tables``, ``make tables``).

Reads ``<runs>/<experiment>/seed<k>/summary.json`` for every row of every :class:`TableSpec` and
writes Markdown, CSV and LaTeX into ``results/tables/`` (temp file + rename).

Statistics, per row and structure:

- **mean (std)**: over the per-case values of every seed pooled together (n = cases x seeds), std
  with ddof=0. With one seed this is the paper's "over the test cases". Cases whose metric is
  undefined (``null`` in the summary, e.g. a distance to an empty mask) are left out and counted in
  the notes. Dice and Jaccard in %, 95HD and ASD in pixels / voxels, as the paper prints them.
- **p**: two-sided paired Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of per-case Dice
  against the table's baseline row: each case's Dice is averaged over the seeds both rows have, then
  cases are paired by id.
- **paper / difference**: the published value (``rmseg.paper_values``) and rmseg minus paper.

A missing run (no summary) prints as "—" with a note, never as a number. A new table (e.g. the
extended comparison of every loss) is one more :class:`TableSpec` passed to :func:`register_table`;
``rmseg-tables`` imports the modules in :data:`SPEC_MODULES` that exist, so a module there that
registers its specs makes them buildable with ``--table <name>``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from rmseg.evaluation import METRICS, _atomic_write_text, read_summary
from rmseg.paper_values import SOURCE, published

MISSING = "—"
METRIC_LABELS = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD", "asd": "ASD"}
PERCENT = {"dice", "jaccard"}
SEED_DIR = re.compile(r"^seed(\d+)$")
#: Modules that register further table specs when imported (skipped when absent).
SPEC_MODULES = ("rmseg.extended_tables",)


@dataclass(frozen=True)
class TableSpec:
    """One table: which runs fill which rows.

    ``rows``: ``(row key, experiment name)`` pairs in print order; the experiment name is the run
    folder under the runs root (``<runs>/<experiment>/seed<k>/``). ``paper``: key of the table in
    ``rmseg.paper_values.PUBLISHED`` (None: no published column values).
    """

    name: str
    title: str
    dataset: str
    baseline: str
    rows: tuple[tuple[str, str], ...]
    structures: tuple[str, ...]
    metrics: tuple[str, ...] = METRICS
    paper: str | None = None

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.rows]
        if self.baseline not in keys:
            raise ValueError(f"table {self.name!r}: baseline {self.baseline!r} is not one of its rows {keys}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.name!r}: duplicate row keys {keys}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"table {self.name!r}: unknown metrics {bad}; choose from {METRICS}")
        if not self.structures:
            raise ValueError(f"table {self.name!r} needs at least one structure")


def _rows(table: str, keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, f"{table}/{k}") for k in keys)


TABLE1 = TableSpec(
    name="table1",
    title="Table 1: Drishti-GS optic cup and disc segmentation (2D U-Net)",
    dataset="gs",
    baseline="unet",
    rows=_rows("table1", ("unet", "mse", "rm10", "rm10_01", "rm20", "rm20_02", "rm20_02_22")),
    structures=("cup", "disc"),
    paper="table1",
)
TABLE2 = TableSpec(
    name="table2",
    title="Table 2: LA 2018 left atrium segmentation (V-Net, 16 labelled volumes)",
    dataset="la",
    baseline="vnet",
    rows=_rows("table2", ("vnet", "boundary", "hd", "sdf", "rm3", "rm4")),
    structures=("atrium",),
    paper="table2",
)
TABLES: dict[str, TableSpec] = {}


def register_table(spec: TableSpec) -> TableSpec:
    """Add a table to those ``rmseg-tables`` builds; a name already taken is a ValueError."""
    if spec.name in TABLES:
        raise ValueError(f"a table named {spec.name!r} is already registered")
    TABLES[spec.name] = spec
    return spec


register_table(TABLE1)
register_table(TABLE2)


# ---------------------------------------------------------------- loading


def load_runs(runs_root: str | Path, experiment: str, dataset: str, structures: Sequence[str]) -> dict[int, pd.DataFrame]:
    """Per-case rows ``{seed: DataFrame(id, structure, metrics...)}`` of every completed seed of an
    experiment (unfinished ``.seed<k>.tmp`` folders are ignored). A summary of another dataset or
    lacking a structure is a ValueError naming the file."""
    folder = Path(runs_root) / experiment
    runs = {}
    if not folder.is_dir():
        return runs
    for sub in sorted(folder.iterdir()):
        match = SEED_DIR.match(sub.name)
        if not match or not (sub / "summary.json").is_file():
            continue
        path = sub / "summary.json"
        summary = read_summary(path)
        if summary["dataset"] != dataset:
            raise ValueError(f"{path}: dataset {summary['dataset']!r}, but this table is on {dataset!r}")
        absent = [s for s in structures if s not in summary["structures"]]
        if absent:
            raise ValueError(f"{path}: no structure(s) {absent} (it has {list(summary['structures'])})")
        df = pd.DataFrame(summary["cases"])
        df["id"] = df["id"].astype(str)
        df.attrs["source"] = summary.get("source", "unknown")
        runs[int(match.group(1))] = df
    return runs


# ---------------------------------------------------------------- statistics


def pooled_mean_std(runs: dict[int, pd.DataFrame], structure: str, metric: str) -> tuple[float, float, int]:
    """Mean and std (ddof=0) of per-case values pooled over seeds, and how many were undefined."""
    values = np.concatenate(
        [df.loc[df["structure"] == structure, metric].to_numpy(dtype=float) for df in runs.values()]
    )
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, int(values.size)
    return float(finite.mean()), float(finite.std()), int(values.size - finite.size)


def paired_dice(
    runs: dict[int, pd.DataFrame], baseline: dict[int, pd.DataFrame], structure: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case Dice of a row and of the baseline, each averaged over their common seeds, paired by
    case id (sorted). Empty arrays when they share no seed or no case."""
    seeds = sorted(set(runs) & set(baseline))
    if not seeds:
        return np.array([]), np.array([])

    def mean_over_seeds(source: dict[int, pd.DataFrame]) -> pd.Series:
        per_seed = [
            source[s].loc[source[s]["structure"] == structure].set_index("id")["dice"].astype(float) for s in seeds
        ]
        return pd.concat(per_seed, axis=1, join="inner").mean(axis=1)

    a, b = mean_over_seeds(runs), mean_over_seeds(baseline)
    common = sorted(set(a.index) & set(b.index))
    a, b = a.loc[common].to_numpy(), b.loc[common].to_numpy()
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value; NaN when undefined (no pairs, all equal)."""
    if a.size == 0 or np.all(a == b):
        return math.nan
    return float(wilcoxon(a, b).pvalue)


def build_table(spec: TableSpec, runs_root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Long-format table (one line per row x structure x metric) and the notes to print under it."""
    runs = {key: load_runs(runs_root, exp, spec.dataset, spec.structures) for key, exp in spec.rows}
    notes, records = [], []
    for key, exp in spec.rows:
        if not runs[key]:
            notes.append(f"{key}: no completed run (no <runs>/{exp}/seed<k>/summary.json).")
    synthetic = [k for k, r in runs.items() if any(df.attrs["source"] == "synthetic" for df in r.values())]
    if synthetic:
        notes.append(f"{', '.join(synthetic)}: run on synthetic stand-in data; not comparable with published values.")
    base = runs[spec.baseline]
    for key, exp in spec.rows:
        row_runs = runs[key]
        seeds = sorted(row_runs)
        for structure in spec.structures:
            n_cases = (
                int(row_runs[seeds[0]].loc[row_runs[seeds[0]]["structure"] == structure, "id"].nunique())
                if seeds
                else 0
            )
            if seeds and key != spec.baseline and base:
                a, b = paired_dice(row_runs, base, structure)
                p = wilcoxon_p(a, b)
                n_pairs = int(a.size)
            else:
                p, n_pairs = math.nan, 0
            for metric in spec.metrics:
                scale = 100.0 if metric in PERCENT else 1.0
                if seeds:
                    mean, std, undefined = pooled_mean_std(row_runs, structure, metric)
                    mean, std = mean * scale, std * scale
                    if undefined:
                        notes.append(f"{key} {structure} {metric}: {undefined} case value(s) undefined, left out.")
                else:
                    mean, std = math.nan, math.nan
                pub = published(spec.paper, key, structure, metric)
                paper_mean = pub[0] if pub is not None else math.nan
                paper_std = pub[1] if pub is not None and pub[1] is not None else math.nan
                records.append(
                    {
                        "table": spec.name,
                        "row": key,
                        "experiment": exp,
                        "structure": structure,
                        "metric": metric,
                        "mean": mean,
                        "std": std,
                        "n_cases": n_cases,
                        "n_seeds": len(seeds),
                        "seeds": " ".join(map(str, seeds)),
                        "paper_mean": paper_mean,
                        "paper_std": paper_std,
                        "difference": mean - paper_mean,
                        "p_dice_vs_baseline": p,
                        "n_pairs": n_pairs,
                    }
                )
    if spec.paper is None or all(math.isnan(r["paper_mean"]) for r in records):
        notes.append(f"Published values: none held in rmseg.paper_values for this table ({SOURCE}).")
    return pd.DataFrame(records), notes


# ---------------------------------------------------------------- rendering


def _fmt(value: float) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.2f}"


def _fmt_mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return MISSING
    return f"{mean:.2f} ({std:.2f})" if math.isfinite(std) else f"{mean:.2f}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return MISSING
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def _cells(spec: TableSpec, df: pd.DataFrame, structure: str, key: str) -> list[list[str]]:
    """Three printed lines of one row: rmseg, paper, difference."""
    sub = df[(df["row"] == key) & (df["structure"] == structure)].set_index("metric")
    first = sub.iloc[0]
    n = f"{first['n_cases']} x {first['n_seeds']}" if first["n_seeds"] else "missing"
    p = "baseline" if key == spec.baseline else _fmt_p(first["p_dice_vs_baseline"])
    ours = [key, "rmseg"] + [_fmt_mean_std(sub.at[m, "mean"], sub.at[m, "std"]) for m in spec.metrics] + [p, n]
    paper = ["", "paper"] + [_fmt_mean_std(sub.at[m, "paper_mean"], sub.at[m, "paper_std"]) for m in spec.metrics]
    diff = ["", "difference"] + [_fmt(sub.at[m, "difference"]) for m in spec.metrics]
    return [ours, paper + ["", ""], diff + ["", ""]]


def _header(spec: TableSpec) -> list[str]:
    return ["Method", "Source"] + [METRIC_LABELS[m] for m in spec.metrics] + [f"p (Dice vs {spec.baseline})", "n (cases x seeds)"]


def _legend(spec: TableSpec) -> str:
    return (
        "Mean (std) over per-case values pooled over seeds (n = cases x seeds, std with ddof=0); "
        "Dice and Jaccard in %, 95HD and ASD in pixels/voxels; difference = rmseg - paper. "
        f"p: two-sided paired Wilcoxon signed-rank test of per-case Dice (averaged over common seeds) "
        f"against {spec.baseline}. {MISSING}: missing."
    )


def render_markdown(spec: TableSpec, df: pd.DataFrame, notes: Sequence[str]) -> str:
    lines = [f"# {spec.title}", "", _legend(spec), ""]
    header = _header(spec)
    for structure in spec.structures:
        lines += [f"## {structure}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, _ in spec.rows:
            lines += ["| " + " | ".join(cells) + " |" for cells in _cells(spec, df, structure, key)]
        lines.append("")
    if notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _tex(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text.replace(MISSING, "--")


def render_latex(spec: TableSpec, df: pd.DataFrame, notes: Sequence[str]) -> str:
    header = _header(spec)
    lines = [
        f"% {_tex(spec.title)}. {_tex(_legend(spec))}",
        r"% needs \usepackage{booktabs}",
        *[f"% {_tex(note)}" for note in notes],
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{_tex(spec.title)}}}",
        r"\begin{tabular}{ll" + "c" * (len(header) - 2) + "}",
        r"\toprule",
    ]
    for structure in spec.structures:
        lines += [rf"\multicolumn{{{len(header)}}}{{l}}{{\textbf{{{_tex(structure)}}}}} \\", r"\midrule"]
        lines.append(" & ".join(_tex(h) for h in header) + r" \\")
        lines.append(r"\midrule")
        for key, _ in spec.rows:
            lines += [" & ".join(_tex(c) for c in cells) + r" \\" for cells in _cells(spec, df, structure, key)]
        lines.append(r"\midrule")
    lines[-1] = r"\bottomrule"
    lines += [r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(spec: TableSpec, runs_root: str | Path, out_dir: str | Path) -> str:
    """Build one table and write ``<name>.md``, ``.csv``, ``.tex`` into ``out_dir``; return the Markdown."""
    df, notes = build_table(spec, runs_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(spec, df, notes)
    _atomic_write_text(out_dir / f"{spec.name}.md", markdown)
    _atomic_write_text(out_dir / f"{spec.name}.csv", df.to_csv(index=False))
    _atomic_write_text(out_dir / f"{spec.name}.tex", render_latex(spec, df, notes))
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/runs", help="runs root (default: results/runs)")
    parser.add_argument("--out", default="results/tables", help="output folder (default: results/tables)")
    parser.add_argument("--table", action="append", help=f"table(s) to build (default: all of {list(TABLES)})")
    args = parser.parse_args(argv)
    for module in SPEC_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    names = args.table or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {list(TABLES)}")
    if not Path(args.runs).is_dir():
        print(f"rmseg-tables: runs root {args.runs} does not exist; train first (make demo / make reproduce-gs)", file=sys.stderr)
        return 2
    for name in names:
        print(write_table(TABLES[name], args.runs, args.out))
    print(f"written to {args.out}/")
    return 0


if __name__ == "__main__":
    # Spec modules register into ``rmseg.tables``, not into this ``__main__`` copy: run that one.
    from rmseg.tables import main as package_main

    sys.exit(package_main())
