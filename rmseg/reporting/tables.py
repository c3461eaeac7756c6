"""Paper tables rebuilt from run summaries, beside the published values (``rmseg-tables``, ``make tables``).

Reads ``<runs>/<experiment>/seed<k>/summary.json`` for every row of every :class:`TableSpec` and
writes Markdown, CSV and LaTeX (temp file + rename). Without ``--runs``, every runs root under
``results/runs`` (a folder holding a table's baseline runs, e.g. ``results/runs/cpu``) is built into
the same relative folder under ``results/tables``.

Per row and structure, three lines: **rmseg**, **paper** (``rmseg.reporting.paper_values``) and **difference**
(rmseg - paper), with:

- **mean (std over cases; std over runs)**: mean and std (ddof=0) of the per-case values of every seed
  pooled (n = cases x seeds), then the std (ddof=1) of the per-seed means, "—" with fewer than
  :data:`MIN_SEEDS` seeds. Undefined case values (``null``, e.g. a distance to an empty mask) are left
  out and counted in the notes. Dice and Jaccard in %, 95HD and ASD in the paper's unit
  (:func:`distance_unit_scale`). The paper does not say what its std is over.
- **ΔDice [95% CI]**: mean Dice difference to the baseline row over their common seeds and cases, with
  a percentile interval from a hierarchical bootstrap (:func:`hierarchical_bootstrap`: seeds, then
  cases within seeds; :data:`N_BOOTSTRAP` resamples, seeded).
- **p per case**: two-sided paired Wilcoxon signed-rank test of per-case Dice averaged over the common
  seeds; with one seed it ignores run-to-run variation, and the cell says so. **p per run**: paired
  t-test of per-seed mean Dice, paired by seed, with at least :data:`MIN_SEEDS` common seeds. Each
  family is Holm-corrected (:func:`holm`) over the rows and structures of the table.

A table is refused (ValueError naming the file and the fix) for a seed folder without
``summary.json``, a summary of another experiment, seed or dataset than its folder, fewer cases than the
dataset's test split, Dice or Jaccard outside [0, 100] %, a negative distance, or runs of one row with
different resolved configs (other than the seed and the keys in :data:`IGNORED_CONFIG_KEYS`). It is
flagged (a mark and a note) when a run's predictions are mostly empty, when a distance unit is unknown,
and for synthetic data. A missing run prints as "—", never as a number.

A new table is one more :class:`TableSpec` passed to :func:`register_table`; ``rmseg-tables`` imports
the modules in :data:`SPEC_MODULES` that exist.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import ttest_rel, wilcoxon

from rmseg.evaluation.per_case import METRIC_NAMES, METRICS, PERCENT
from rmseg.evaluation.records import MOSTLY_EMPTY, atomic_write_text, empty_predictions, read_summary
from rmseg.models import complete_model_config
from rmseg.reporting.paper_values import DISTANCE_UNIT, MA_2020, PAPER_GRID, SOURCE, published, row_source

MISSING = "—"
DISTANCES = {"hd95", "asd"}
SEED_DIR = re.compile(r"^seed(\d+)$")
#: Modules that register further table specs when imported (skipped when absent).
SPEC_MODULES = ("rmseg.reporting.extended_tables",)
#: Test cases of each dataset's real test split (Drishti-GS official release; Ma et al.'s LA list).
TEST_SPLIT = {"gs": 51, "la": 20}
#: Seeds needed for the std over runs and the per-run test.
MIN_SEEDS = 3
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
#: Resolved-config keys that say where or how fast a run ran, not what it computed: runs of one row
#: may differ in these (and in the seed).
IGNORED_CONFIG_KEYS = (
    "seed", "resume", "on_exists", "paths", "data.root", "data.prepared_dir", "data.num_workers", "data.cache",
    "trainer.device", "trainer.num_threads", "trainer.progress_bar", "trainer.tensorboard",
    "trainer.checkpoint_every", "trainer.log_every", "eval.workers", "eval.save_predictions", "eval.num_saved",
)
EMPTY_MARK, UNIT_MARK, SYNTHETIC_MARK = "†", "§", "*"
ONE_SEED = "(1 seed)"


@dataclass(frozen=True)
class TableSpec:
    """One table: which runs fill which rows.

    ``rows``: ``(row key, experiment name)`` pairs in print order; the experiment name is the run
    folder under the runs root (``<runs>/<experiment>/seed<k>/``). ``paper``: key of the table in
    ``rmseg.reporting.paper_values.PUBLISHED`` (None: no published values).
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

    @property
    def baseline_experiment(self) -> str:
        return dict(self.rows)[self.baseline]


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


# ---------------------------------------------------------------- loading and checks


def distance_unit_scale(summary: Mapping[str, Any], config: Mapping[str, Any] | None, dataset: str) -> float | None:
    """Paper distance units per unit of a run's distances (None: unknown).

    In order: the summary's ``distance_unit_scale``; for a dataset the paper measures on a fixed grid
    (:data:`rmseg.reporting.paper_values.PAPER_GRID`, Drishti-GS 512 x 512), that grid over the grid the run was
    evaluated on: the summary's ``eval_grid``, else the run's ``config.yaml`` ``data.image_size`` (summaries
    written before ``eval_grid`` existed). Other datasets (LA) are evaluated on the paper's voxel grid: 1.
    A protocol that evaluates LA on a resampled grid writes ``distance_unit_scale`` into its summaries.
    """
    if summary.get("distance_unit_scale") is not None:
        return float(summary["distance_unit_scale"])
    paper_grid = PAPER_GRID.get(dataset)
    if paper_grid is None:
        return 1.0
    grid = summary.get("eval_grid")
    if grid is None and config is not None:
        grid = (config.get("data") or {}).get("image_size")
    if grid is None:
        return None
    ratios = {p / g for p, g in zip(paper_grid, grid)}
    if len(grid) != len(paper_grid) or len(ratios) != 1:
        raise ValueError(f"evaluation grid {list(grid)} is not an isotropic scaling of the paper's {list(paper_grid)}")
    return ratios.pop()


def read_run_config(seed_dir: Path) -> dict | None:
    """The resolved config a run wrote to ``seed_dir/config.yaml``, its model keys completed; None if absent."""
    path = seed_dir / "config.yaml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a mapping; it should be the resolved config rmseg-train wrote")
    if isinstance(config.get("model"), dict):  # with the model keys configs gained since it was written
        config["model"] = complete_model_config(config["model"], config.get("loss"))
    return config


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def computed_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` flattened to dotted keys, without :data:`IGNORED_CONFIG_KEYS`: what a run computed."""
    flat = _flatten(config)
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in IGNORED_CONFIG_KEYS)}


def _check_summary(path: Path, summary: dict, experiment: str, seed: int, dataset: str, structures: Sequence[str],
                   config: dict | None) -> None:
    """Refuse a summary that does not belong to its folder or cannot be a complete, valid evaluation."""
    if summary["dataset"] != dataset:
        raise ValueError(f"{path}: dataset {summary['dataset']!r}, but this table is on {dataset!r}")
    if summary["experiment"] != experiment or summary["seed"] != seed:
        raise ValueError(
            f"{path}: the summary is of experiment {summary['experiment']!r} seed {summary['seed']!r}, but its folder "
            f"says {experiment!r} seed {seed}: move the run folder to <runs>/{summary['experiment']}/seed{summary['seed']}/"
        )
    absent = [s for s in structures if s not in summary["structures"]]
    if absent:
        raise ValueError(f"{path}: no structure(s) {absent} (it has {list(summary['structures'])})")
    n_cases = len({str(c["id"]) for c in summary["cases"]})
    source = summary.get("source")
    expected = TEST_SPLIT.get(dataset) if source == "real" else None
    if source == "synthetic" and config is not None:
        expected = ((config.get("data") or {}).get("synthetic") or {}).get("num_test")
    if expected is not None and n_cases < expected:
        raise ValueError(
            f"{path}: {n_cases} test cases, but the {dataset} test split has {expected}: evaluate the run on the whole "
            f"test split (rmseg-eval --checkpoint {path.parent}/checkpoint.pt --out <new folder>) and put that summary here"
        )
    for i, case in enumerate(summary["cases"]):
        for metric in METRICS:
            value = case[metric]
            if not math.isfinite(value):
                continue
            if metric in PERCENT and not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{path}: cases[{i}] ({case['id']}, {case['structure']}) {metric} = {value}, outside [0, 1] "
                    f"(0-100 %): the summary is corrupt or not rmseg's; re-run rmseg-eval on that run"
                )
            if metric in DISTANCES and value < 0:
                raise ValueError(
                    f"{path}: cases[{i}] ({case['id']}, {case['structure']}) {metric} = {value} is negative: "
                    f"the summary is corrupt or not rmseg's; re-run rmseg-eval on that run"
                )


def load_runs(runs_root: str | Path, experiment: str, dataset: str, structures: Sequence[str]) -> dict[int, pd.DataFrame]:
    """Per-case rows ``{seed: DataFrame(id, structure, metrics...)}`` of every seed folder of an experiment.

    Unfinished ``.seed<k>.tmp`` folders are ignored; a ``seed<k>`` folder without ``summary.json`` and a
    summary failing the checks of the module docstring are ValueErrors naming the file and the fix. Each
    frame's ``attrs`` hold ``path``, ``source``, ``config`` (the run's ``config.yaml`` or None) and
    ``distance_unit_scale`` (:func:`distance_unit_scale`).
    """
    folder = Path(runs_root) / experiment
    runs = {}
    if not folder.is_dir():
        return runs
    for sub in sorted(folder.iterdir()):
        match = SEED_DIR.match(sub.name)
        if not match:
            continue
        path = sub / "summary.json"
        if not path.is_file():
            raise ValueError(
                f"{sub} is a run folder without summary.json: evaluate it (rmseg-eval --checkpoint {sub}/checkpoint.pt "
                f"--out {sub}) or move it out of {folder}"
            )
        seed = int(match.group(1))
        summary = read_summary(path)
        config = read_run_config(sub)
        _check_summary(path, summary, experiment, seed, dataset, structures, config)
        df = pd.DataFrame(summary["cases"])
        df["id"] = df["id"].astype(str)
        df.attrs.update(path=path, source=summary.get("source", "unknown"), config=config,
                        distance_unit_scale=distance_unit_scale(summary, config, dataset))
        runs[seed] = df
    return runs


def check_same_config(experiment: str, runs: Mapping[int, pd.DataFrame]) -> None:
    """Refuse runs of one row whose resolved configs differ beyond the seed and the ignored keys."""
    configs = {seed: computed_settings(df.attrs["config"]) for seed, df in runs.items() if df.attrs.get("config") is not None}
    scales = {seed: df.attrs["distance_unit_scale"] for seed, df in runs.items()}
    if len(set(scales.values())) > 1:
        raise ValueError(f"runs of {experiment} have different distance unit scales {scales}: put them under different runs roots")
    if len(configs) < 2:
        return
    (first, reference), *others = sorted(configs.items())
    for seed, config in others:
        keys = sorted(k for k in set(reference) | set(config) if reference.get(k) != config.get(k))
        if keys:
            shown = "; ".join(f"{k}: {reference.get(k)!r} vs {config.get(k)!r}" for k in keys[:8])
            raise ValueError(
                f"runs of {experiment} differ in their resolved configs beyond the seed (seed{first} vs seed{seed}: {shown}): "
                f"one row is one config; put the other runs under another runs root (paths.runs_dir=...)"
            )


# ---------------------------------------------------------------- statistics


def case_values(df: pd.DataFrame, structure: str, metric: str) -> np.ndarray:
    """Per-case ``metric`` of ``structure`` in the tables' units (Dice in %, distances in the paper's)."""
    values = df.loc[df["structure"] == structure, metric].to_numpy(dtype=float)
    if metric in DISTANCES:
        values = values * (df.attrs.get("distance_unit_scale") or 1.0)
    return values * (100.0 if metric in PERCENT else 1.0)


def pooled_mean_std(runs: Mapping[int, pd.DataFrame], structure: str, metric: str) -> tuple[float, float, int]:
    """Mean and std (ddof=0) of per-case values pooled over seeds, and how many were undefined, in the
    table's units (% for Dice and Jaccard, distances times each run's unit scale)."""
    values = np.concatenate([case_values(df, structure, metric) for df in runs.values()])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, int(values.size)
    return float(finite.mean()), float(finite.std()), int(values.size - finite.size)


def seed_means_std(runs: Mapping[int, pd.DataFrame], structure: str, metric: str) -> float:
    """Std (ddof=1) of the per-seed means; NaN with fewer than :data:`MIN_SEEDS` seeds."""
    if len(runs) < MIN_SEEDS:
        return math.nan
    return float(np.std([np.nanmean(case_values(df, structure, metric)) for df in runs.values()], ddof=1))


def _per_case(df: pd.DataFrame, structure: str) -> pd.Series:
    return df.loc[df["structure"] == structure].set_index("id")["dice"].astype(float)


def paired_dice_matrix(
    runs: Mapping[int, pd.DataFrame], baseline: Mapping[int, pd.DataFrame], structure: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case Dice ``(seeds, cases)`` of a row and of the baseline over their common seeds (sorted)
    and the cases every one of those runs has a finite Dice for (sorted by id)."""
    seeds = sorted(set(runs) & set(baseline))
    if not seeds:
        return np.empty((0, 0)), np.empty((0, 0))
    a = pd.concat([_per_case(runs[s], structure) for s in seeds], axis=1, join="inner")
    b = pd.concat([_per_case(baseline[s], structure) for s in seeds], axis=1, join="inner")
    common = sorted(set(a.index) & set(b.index))
    a, b = a.loc[common].to_numpy().T, b.loc[common].to_numpy().T
    keep = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    return a[:, keep], b[:, keep]


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value; NaN when undefined (no pairs, all equal)."""
    if a.size == 0 or np.all(a == b):
        return math.nan
    return float(wilcoxon(a, b).pvalue)


def paired_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel``); NaN with fewer than
    :data:`MIN_SEEDS` pairs or no variation in the differences."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size < MIN_SEEDS or np.all(d == d[0]):
        return math.nan
    return float(ttest_rel(a, b).pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are not tests and stay NaN).

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[ok][order]))
        values = np.empty(m)
        values[order] = adjusted
        out[ok] = values
    return out


def hierarchical_bootstrap(values: np.ndarray, n: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``n`` bootstrap means of a ``(seeds, cases)`` array: per resample, draw seeds with replacement,
    then cases with replacement within each drawn seed, and average (vectorised, ``numpy`` Generator)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"need a non-empty (seeds, cases) array, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    s, c = values.shape
    seeds = rng.integers(0, s, size=(n, s, 1))
    cases = rng.integers(0, c, size=(n, s, c))
    return values[seeds, cases].mean(axis=(1, 2))


def dice_difference_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over ``(seeds, cases)`` and its percentile interval from
    :func:`hierarchical_bootstrap` (NaNs when there is nothing to compare)."""
    if a.size == 0:
        return math.nan, math.nan, math.nan
    d = np.asarray(a, float) - np.asarray(b, float)
    low, high = np.quantile(hierarchical_bootstrap(d), [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(low), float(high)


# ---------------------------------------------------------------- the table


def build_table(spec: TableSpec, runs_root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Long-format table (one line per row x structure x metric) and the notes to print under it."""
    runs = {key: load_runs(runs_root, exp, spec.dataset, spec.structures) for key, exp in spec.rows}
    for key, exp in spec.rows:
        check_same_config(exp, runs[key])
    notes, records, marks = [], [], {key: "" for key, _ in spec.rows}
    for key, exp in spec.rows:
        if not runs[key]:
            notes.append(f"{key}: no completed run (no <runs>/{exp}/seed<k>/summary.json).")
    synthetic = [k for k, r in runs.items() if any(df.attrs["source"] == "synthetic" for df in r.values())]
    for key in synthetic:
        marks[key] += SYNTHETIC_MARK
    if synthetic:
        notes.append(f"{SYNTHETIC_MARK} {', '.join(synthetic)}: run on synthetic stand-in data; not comparable with published values.")
    unknown_unit = [k for k, r in runs.items() if any(df.attrs["distance_unit_scale"] is None for df in r.values())]
    for key in unknown_unit:
        marks[key] += UNIT_MARK
    if unknown_unit:
        notes.append(f"{UNIT_MARK} {', '.join(unknown_unit)}: evaluation grid unknown (no distance_unit_scale or eval_grid "
                     f"in the summary, no config.yaml beside it): distances shown as recorded, maybe not in {DISTANCE_UNIT.get(spec.dataset, 'the paper unit')}.")
    scales: dict[float, list[str]] = {}
    for key, _ in spec.rows:
        for scale in sorted({df.attrs["distance_unit_scale"] for df in runs[key].values()} - {None, 1.0}):
            scales.setdefault(scale, []).append(key)
    if scales:
        notes.append("Distances converted to the paper's unit (runs evaluated on another grid than the paper's): "
                     + "; ".join(f"{', '.join(keys)} x {scale:g}" for scale, keys in scales.items()) + ".")
    no_config = [k for k, r in runs.items() if r and all(df.attrs["config"] is None for df in r.values())]
    if no_config:
        notes.append(f"{', '.join(no_config)}: no config.yaml beside the summaries: the runs' configs were not compared.")
    for key, _ in spec.rows:
        for structure in spec.structures:
            counts = {seed: empty_predictions(df, structure) for seed, df in sorted(runs[key].items())}
            if not any(empty for empty, _ in counts.values()):
                continue
            mostly = any(empty >= MOSTLY_EMPTY * total for empty, total in counts.values())
            if mostly and EMPTY_MARK not in marks[key]:
                marks[key] += EMPTY_MARK
            shown = ", ".join(f"{empty} of {total} (seed {seed})" for seed, (empty, total) in counts.items())
            penalized = sum(int(df.loc[df["structure"] == structure, "penalized"].astype(bool).sum())
                            for df in runs[key].values() if "penalized" in df)
            notes.append(f"{EMPTY_MARK + ' ' if mostly else ''}{key} {structure}: prediction empty in {shown} test cases"
                         + (f"; their 95HD and ASD ({penalized} case(s)) are the penalty for one empty mask, the image diagonal." if penalized else "."))

    base = runs[spec.baseline]
    for key, exp in spec.rows:
        row_runs = runs[key]
        seeds = sorted(row_runs)
        for structure in spec.structures:
            n_cases = int(row_runs[seeds[0]].loc[row_runs[seeds[0]]["structure"] == structure, "id"].nunique()) if seeds else 0
            stats = {"dice_diff": math.nan, "dice_diff_low": math.nan, "dice_diff_high": math.nan, "p_case": math.nan,
                     "n_pairs": 0, "p_run": math.nan, "n_seed_pairs": 0}
            if seeds and key != spec.baseline and base:
                a, b = paired_dice_matrix(row_runs, base, structure)
                diff, low, high = dice_difference_ci(100 * a, 100 * b)
                seed_means = (a.mean(axis=1), b.mean(axis=1)) if a.size else (np.array([]), np.array([]))
                stats.update(dice_diff=diff, dice_diff_low=low, dice_diff_high=high, n_pairs=int(a.shape[1]) if a.size else 0,
                             p_case=wilcoxon_p(a.mean(axis=0), b.mean(axis=0)) if a.size else math.nan,
                             n_seed_pairs=int(a.shape[0]) if a.size else 0, p_run=paired_t_p(*seed_means))
            for metric in spec.metrics:
                if seeds:
                    mean, std, undefined = pooled_mean_std(row_runs, structure, metric)
                    std_runs = seed_means_std(row_runs, structure, metric)
                    if undefined:
                        notes.append(f"{key} {structure} {metric}: {undefined} case value(s) undefined, left out.")
                else:
                    mean, std, std_runs = math.nan, math.nan, math.nan
                pub = published(spec.paper, key, structure, metric)
                paper_mean, paper_std = pub if pub is not None else (math.nan, math.nan)
                records.append({
                    "table": spec.name, "row": key, "experiment": exp, "structure": structure, "metric": metric,
                    "mean": mean, "std_cases": std, "std_runs": std_runs,
                    "n_cases": n_cases, "n_seeds": len(seeds), "seeds": " ".join(map(str, seeds)),
                    "paper_mean": paper_mean, "paper_std": paper_std, "difference": mean - paper_mean,
                    **stats, "flags": marks[key],
                })
    df = pd.DataFrame(records)
    for column in ("p_case", "p_run"):
        firsts = df.drop_duplicates(["row", "structure"])
        adjusted = pd.Series(holm(firsts[column].to_numpy()), index=pd.MultiIndex.from_frame(firsts[["row", "structure"]]))
        df[f"{column}_holm"] = adjusted.reindex(pd.MultiIndex.from_frame(df[["row", "structure"]])).to_numpy()
    if spec.paper is None:
        notes.append(f"Published values: none (the paper has no such table; {SOURCE}).")
    else:
        copied = [key for key, _ in spec.rows if "Ma et al." in row_source(spec.paper, key)]
        notes.append(f"Published values: {SOURCE}." + (
            f" Rows {', '.join(copied)}: not run by Wang et al.; their published numbers are those of {MA_2020}, "
            "copied by Wang et al. (whose protocol Table 2 follows)."
            if copied else ""))
    return df, notes


# ---------------------------------------------------------------- rendering


def _num(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return MISSING
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def _cells(spec: TableSpec, df: pd.DataFrame, structure: str, key: str) -> list[list[str]]:
    """Printed lines of one row: rmseg, then paper and difference when the table has published values."""
    sub = df[(df["row"] == key) & (df["structure"] == structure)].set_index("metric")
    first = sub.iloc[0]
    n = f"{first['n_cases']} x {first['n_seeds']}" if first["n_seeds"] else "missing"
    values = [
        MISSING if not math.isfinite(sub.at[m, "mean"])
        else f"{sub.at[m, 'mean']:.2f} ({_num(sub.at[m, 'std_cases'])}; {_num(sub.at[m, 'std_runs'])})"
        for m in spec.metrics
    ]
    if key == spec.baseline:
        stats = ["baseline", "baseline", "baseline"]
    else:
        diff = MISSING if not math.isfinite(first["dice_diff"]) else (
            f"{first['dice_diff']:+.2f} [{first['dice_diff_low']:+.2f}, {first['dice_diff_high']:+.2f}]")
        p_case = _fmt_p(first["p_case_holm"])
        if first["n_seed_pairs"] == 1:
            diff, p_case = (v if v == MISSING else f"{v} {ONE_SEED}" for v in (diff, p_case))
        stats = [diff, p_case, _fmt_p(first["p_run_holm"])]
    ours = [f"{key} {first['flags']}".strip(), "rmseg", *values, *stats, n]
    pub = [(sub.at[m, "paper_mean"], sub.at[m, "paper_std"]) for m in spec.metrics]
    source = "paper (Ma et al.)" if "Ma et al." in row_source(spec.paper, key) else "paper"
    paper = ["", source] + [MISSING if not math.isfinite(m) else f"{m:.2f} ({s:.2f})" for m, s in pub]
    difference = ["", "difference"] + [_num(sub.at[m, "difference"], signed=True) for m in spec.metrics]
    blank = [""] * 4
    return [ours] if spec.paper is None else [ours, paper + blank, difference + blank]


def _header(spec: TableSpec) -> list[str]:
    unit = DISTANCE_UNIT.get(spec.dataset, "px/voxels")
    labels = [f"{METRIC_NAMES[m]} ({'%' if m in PERCENT else unit})" for m in spec.metrics]
    return ["Method", "Source", *labels, f"ΔDice vs {spec.baseline} [95% CI]", "p per case (Holm)",
            "p per run (Holm)", "n (cases x seeds)"]


def _legend(spec: TableSpec) -> str:
    return (
        f"rmseg: mean (std over cases, seeds pooled, ddof=0; std of the per-seed means, ddof=1, {MISSING} with fewer "
        f"than {MIN_SEEDS} seeds). paper: mean (std) as published; the paper does not say what its std is over. "
        "difference: rmseg - paper. "
        f"ΔDice: mean Dice difference (points) to {spec.baseline} over their common seeds and cases, 95% percentile "
        f"interval of a hierarchical bootstrap (seeds, then cases within seeds; {N_BOOTSTRAP} resamples, seed "
        f"{BOOTSTRAP_SEED}). p per case: two-sided paired Wilcoxon signed-rank test of per-case Dice averaged over "
        f"the common seeds. {ONE_SEED}: one run per row, so the value does not account for run-to-run variation. "
        f"p per run: two-sided paired t-test of per-seed mean Dice, paired by seed, with at least {MIN_SEEDS} "
        "common seeds. Both p columns Holm-corrected over the rows and structures of this table. "
        f"{MISSING}: missing."
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
    for char, repl in ((MISSING, "--"), ("Δ", r"$\Delta$"), (EMPTY_MARK, r"$\dagger$"), (UNIT_MARK, r"\S{}")):
        text = text.replace(char, repl)
    return text


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
    atomic_write_text(out_dir / f"{spec.name}.md", markdown)
    atomic_write_text(out_dir / f"{spec.name}.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / f"{spec.name}.tex", render_latex(spec, df, notes))
    return markdown


def has_runs(runs_root: str | Path, experiment: str) -> bool:
    """Whether ``<runs_root>/<experiment>`` holds a ``seed<k>`` folder."""
    folder = Path(runs_root) / experiment
    return folder.is_dir() and any(SEED_DIR.match(p.name) for p in folder.iterdir())


def find_runs_roots(results_runs: str | Path, specs: Sequence[TableSpec]) -> dict[Path, list[TableSpec]]:
    """Runs roots under ``results_runs`` (itself included) and the tables each can build: those whose
    baseline row has runs there. Seed and prediction folders are not searched."""
    results_runs = Path(results_runs)
    roots: dict[Path, list[TableSpec]] = {}
    for folder, dirs, _ in os.walk(results_runs):
        dirs[:] = sorted(d for d in dirs if not SEED_DIR.match(d) and not d.startswith(".") and d != "predictions")
        buildable = [s for s in specs if has_runs(folder, s.baseline_experiment)]
        if buildable:
            roots[Path(folder)] = buildable
    return roots
