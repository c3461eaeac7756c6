"""Dose-response of the RM weight: a row of Table 1 or 2 trained over a log-spaced grid of ``loss.alpha``.

``make sweep-alpha`` trains each point as a normal run folder, ``<runs>/alpha_sweep/<row>/alpha<value>/
seed<k>/`` (RM averaged over pixels, as the table experiments), and the table's baseline in its usual
place, ``<runs>/<table>/<baseline>/seed<k>/``, under the same seeds; the table's own runs of the row are the
point at the row's alpha when their training is otherwise the same (:func:`sweep_points`). This module reads those folders only
and writes, per table, a figure (Dice and 95HD per structure against alpha on a log axis: mean and 95%
interval of a hierarchical bootstrap over seeds, then cases; the baseline as a band; the RM term's
gradient share on its own panel) and a Markdown table of the same numbers.

The mean over pixels is the literal sum of Eq. 4 divided by the pixel count ``N`` of the network input,
so a point ``alpha`` of this sweep is the sum with weight ``alpha / N``: the table gives both. The
gradient share is the norm of the RM term's gradient with respect to the logits over that of CE + Dice
(``curve.csv``, ``share_ResidualMomentLoss``), averaged over the logged iterations and the seeds.

    python -m rmseg.cli.alpha_sweep --runs results/runs/small --table table1
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rmseg.evaluation.records import read_curve
from rmseg.reporting.tables import (
    TABLE1,
    TABLE2,
    TableSpec,
    case_values,
    computed_settings,
    dice_difference_ci,
    hierarchical_bootstrap,
    load_runs,
    paired_dice_matrix,
    read_run_config,
)

SWEEP_DIR = "alpha_sweep"
POINT = re.compile(r"^alpha(.+)$")
SHARE = "share_ResidualMomentLoss"
SPECS = {"table1": TABLE1, "table2": TABLE2}
METRICS = ("dice", "hd95")


def sweep_points(runs_root: Path, row: str) -> dict[float, str]:
    """``{alpha: experiment}`` of the swept points of ``row`` (e.g. ``table1/rm20_02_22``) under ``runs_root``.

    The table's own runs of ``row`` join as the point at their ``loss.alpha`` (e.g. LA's 0.01) when that
    alpha is not swept and their resolved config equals a swept point's but for ``name`` and ``loss.alpha``:
    the same training under another folder name, so it is not trained twice.
    """
    folder = runs_root / SWEEP_DIR / row
    points = {}
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            match = POINT.match(sub.name)
            if match and sub.is_dir():
                points[float(match.group(1))] = f"{SWEEP_DIR}/{row}/{sub.name}"
    if points:
        own = _table_row_alpha(runs_root, row, points)
        if own is not None and own not in points:
            points[own] = row
    return dict(sorted(points.items()))


def _first_config(folder: Path) -> dict | None:
    seeds = sorted(p for p in folder.glob("seed*") if (p / "config.yaml").is_file()) if folder.is_dir() else []
    return read_run_config(seeds[0]) if seeds else None


def _table_row_alpha(runs_root: Path, row: str, points: dict[float, str]) -> float | None:
    """``loss.alpha`` of the table's runs of ``row`` if they are a point of its sweep, else None."""
    own = _first_config(runs_root / row)
    swept = _first_config(runs_root / next(iter(points.values())))
    if own is None or swept is None:
        return None
    own_flat, swept_flat = computed_settings(own), computed_settings(swept)
    differs = {k for k in own_flat.keys() | swept_flat.keys() if own_flat.get(k) != swept_flat.get(k)}
    differs -= {"name", "loss.alpha"}
    return None if differs else float(own["loss"]["alpha"])


def case_matrix(runs: dict[int, pd.DataFrame], structure: str, metric: str) -> np.ndarray:
    """``(seeds, cases)`` values in the tables' units, cases aligned by id; cases undefined in any seed
    (e.g. 95HD of an empty prediction) left out."""
    columns = [pd.Series(case_values(df, structure, metric), index=df.loc[df["structure"] == structure, "id"].to_numpy())
               for df in runs.values()]
    values = pd.concat(columns, axis=1, join="inner").to_numpy().T
    return values[:, np.isfinite(values).all(axis=0)]


def mean_ci(runs: dict[int, pd.DataFrame], structure: str, metric: str) -> tuple[float, float, float]:
    """Mean of the per-case values (seeds pooled) and the 95% interval of their hierarchical bootstrap."""
    values = case_matrix(runs, structure, metric)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    low, high = np.quantile(hierarchical_bootstrap(values), [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def gradient_share(runs_root: Path, experiment: str, seeds: Sequence[int]) -> float:
    """Mean of ``share_ResidualMomentLoss`` over the logged iterations of each seed's ``curve.csv``, then seeds."""
    shares = []
    for seed in seeds:
        path = runs_root / experiment / f"seed{seed}" / "curve.csv"
        if path.is_file():
            curve = read_curve(path)
            if SHARE in curve:
                shares.append(float(curve[SHARE].mean()))
    return float(np.mean(shares)) if shares else math.nan


def input_pixels(runs: dict[int, pd.DataFrame]) -> int | None:
    """Pixels (voxels) of one network input of a run: LA's patch (cut from the already coarser volume),
    Drishti-GS's prepared image over ``data.downsample``."""
    config = next(iter(runs.values())).attrs.get("config") or {}
    data = config.get("data", {})
    if data.get("name") == "la":
        return int(np.prod(data["patch_size"])) if data.get("patch_size") else None
    size = data.get("image_size")
    if not size:
        return None
    factors = data.get("downsample") or [1] * len(size)
    return int(np.prod([math.ceil(s / f) for s, f in zip(size, factors)]))


def collect(runs_root: str | Path, spec: TableSpec) -> pd.DataFrame:
    """One row per (swept row, alpha or baseline, structure, metric): mean, 95% interval, ΔDice to the
    baseline with its interval (paired over common seeds and cases), gradient share, seeds."""
    runs_root = Path(runs_root)
    rows = dict(spec.rows)
    baseline = load_runs(runs_root, rows[spec.baseline], spec.dataset, spec.structures)
    records = []
    if baseline:
        for structure in spec.structures:
            for metric in METRICS:
                mean, low, high = mean_ci(baseline, structure, metric)
                records.append({"row": spec.baseline, "alpha": math.nan, "structure": structure, "metric": metric,
                                "mean": mean, "low": low, "high": high, "seeds": len(baseline)})
    for key, experiment in rows.items():
        for alpha, point in sweep_points(runs_root, experiment).items():
            runs = load_runs(runs_root, point, spec.dataset, spec.structures)
            if not runs:
                continue
            share = gradient_share(runs_root, point, sorted(runs))
            pixels = input_pixels(runs)
            for structure in spec.structures:
                delta = (math.nan,) * 3
                if baseline:
                    delta = dice_difference_ci(*paired_dice_matrix(runs, baseline, structure))
                for metric in METRICS:
                    mean, low, high = mean_ci(runs, structure, metric)
                    records.append({
                        "row": key, "alpha": alpha, "structure": structure, "metric": metric, "mean": mean,
                        "low": low, "high": high, "seeds": len(runs), "share": share,
                        "alpha_sum": alpha / pixels if pixels else math.nan,
                        **({"delta": 100 * delta[0], "delta_low": 100 * delta[1], "delta_high": 100 * delta[2]}
                           if metric == "dice" else {}),
                    })
    return pd.DataFrame.from_records(records)


def render_markdown(spec: TableSpec, df: pd.DataFrame) -> str:
    """The sweep as a Markdown table per structure."""
    lines = [f"# RM weight sweep, {spec.name} ({spec.dataset})", "",
             "alpha: weight of RM averaged over pixels; alpha (sum): the same weight for the literal sum of Eq. 4 "
             "(alpha / pixels of the network input). Mean [95% interval] of per-case values, seeds pooled, "
             "hierarchical bootstrap (seeds, then cases; 10000 resamples). ΔDice: paired with the baseline over "
             "common seeds and cases. Share: norm of the RM gradient on the logits over CE + Dice's, mean over "
             "logged iterations and seeds.", ""]
    for structure in spec.structures:
        lines += [f"## {structure}", "",
                  "| row | alpha | alpha (sum) | seeds | Dice (%) | ΔDice vs baseline | 95HD | share |",
                  "|---|---|---|---|---|---|---|---|"]
        sub = df[df["structure"] == structure]
        for (row, alpha), group in sub.groupby(["row", "alpha"], dropna=False, sort=False):
            dice = group[group["metric"] == "dice"].iloc[0]
            hd = group[group["metric"] == "hd95"].iloc[0]
            base = row == spec.baseline
            lines.append(
                f"| {row} | {'—' if base else f'{alpha:g}'} | {'—' if base else f'{dice.alpha_sum:.3g}'} | "
                f"{dice.seeds} | {dice['mean']:.2f} [{dice.low:.2f}, {dice.high:.2f}] | "
                f"{'baseline' if base else f'{dice.delta:+.2f} [{dice.delta_low:+.2f}, {dice.delta_high:+.2f}]'} | "
                f"{hd['mean']:.2f} [{hd.low:.2f}, {hd.high:.2f}] | {'—' if base else f'{dice.share:.3g}'} |")
        lines.append("")
    return "\n".join(lines)


def plot(spec: TableSpec, df: pd.DataFrame, out: Path) -> Path:
    """Dice and 95HD per structure against alpha (log axis), baseline band, gradient share below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    structures = list(spec.structures)
    fig, axes = plt.subplots(3, len(structures), figsize=(4.2 * len(structures), 8.4), squeeze=False,
                             sharex=True, layout="constrained")
    swept = df[df["row"] != spec.baseline]
    for col, structure in enumerate(structures):
        for r, metric in enumerate(METRICS):
            ax = axes[r, col]
            base = df[(df["row"] == spec.baseline) & (df["structure"] == structure) & (df["metric"] == metric)]
            if len(base):
                b = base.iloc[0]
                ax.axhspan(b.low, b.high, color="0.85", label=f"{spec.baseline} (95% interval)")
                ax.axhline(b["mean"], color="0.4", lw=1)
            for row, group in swept[(swept["structure"] == structure) & (swept["metric"] == metric)].groupby("row"):
                group = group.sort_values("alpha")
                ax.errorbar(group["alpha"], group["mean"], yerr=[group["mean"] - group.low, group.high - group["mean"]],
                            marker="o", capsize=3, label=row)
            ax.set_xscale("log")
            ax.set_ylabel({"dice": "Dice (%)", "hd95": "95HD"}[metric])
            ax.set_title(f"{structure}: {'Dice' if metric == 'dice' else '95HD'}")
        ax = axes[2, col]
        for row, group in swept[(swept["structure"] == structure) & (swept["metric"] == "dice")].groupby("row"):
            group = group.sort_values("alpha")
            ax.plot(group["alpha"], group["share"], marker="o", label=row)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("alpha (RM averaged over pixels)")
        ax.set_ylabel("|grad RM| / |grad CE+Dice|")
        ax.set_title(f"{structure}: gradient share")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"RM weight sweep, {spec.name} ({spec.dataset})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
