"""Contour overlays like the paper's Fig. 2 (Drishti-GS) and Fig. 3 (LA), drawn from saved predictions.

``make figures`` (``python -m rmseg.figures``) takes, for Table 1 and Table 2, the baseline row and the
best residual-moment row (highest mean Dice over structures and seeds in the run summaries), the
lowest seed both have, and the test cases whose predictions both runs saved
(``<run>/predictions/<id>.png|.nii.gz``; ``eval.save_predictions=some`` saves the first
``eval.num_saved`` ids in sorted order, the default). Images and ground truth come from the test cases
of the run's data config. Ground truth is drawn in green, the prediction in blue; structures differ
by line style. Figures go to ``results/figures/`` as PNG (temp file + rename).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.measure import find_contours  # noqa: E402

from rmseg.evaluation import find_prediction, load_prediction, read_summary  # noqa: E402
from rmseg.tables import SEED_DIR, TABLE1, TABLE2, TableSpec, load_runs  # noqa: E402

GT_COLOR, PRED_COLOR = "#00c000", "#1060ff"
LINE_STYLES = ("-", "--", ":", "-.")
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}


def _display_image(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)`` or ``(H, W)`` scaled to [0, 1] for imshow."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = np.moveaxis(image, 0, -1)
        if image.shape[-1] == 1:
            image = image[..., 0]
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def _draw_contours(ax, label: np.ndarray, structures: Mapping[str, Sequence[int]], color: str) -> None:
    for style, (name, ids) in zip(LINE_STYLES, structures.items()):
        for contour in find_contours(np.isin(label, ids).astype(float), 0.5):
            ax.plot(contour[:, 1], contour[:, 0], color=color, linestyle=style, linewidth=1.5)


def _save(fig, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, out_path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out_path


def overlay_figure(
    image: np.ndarray,
    gt: np.ndarray,
    predictions: Mapping[str, np.ndarray | None],
    structures: Mapping[str, Sequence[int]],
    out_path: str | Path,
    *,
    title: str = "",
    slice_index: int | None = None,
) -> Path:
    """One panel per entry of ``predictions`` (a None prediction draws the ground truth alone).

    2D: ``image (C, H, W)``, labels ``(H, W)``. 3D: ``image (C, H, W, D)``, labels ``(H, W, D)``; the
    axial slice ``slice_index`` (default: the slice with the most foreground in ``gt``) is drawn.
    """
    gt = np.asarray(gt)
    if gt.ndim == 3:
        if slice_index is None:
            slice_index = int(np.argmax((gt > 0).sum(axis=(0, 1))))
        if not 0 <= slice_index < gt.shape[2]:
            raise ValueError(f"slice_index {slice_index} outside 0..{gt.shape[2] - 1}")
        image, gt = np.asarray(image)[..., slice_index], gt[..., slice_index]
        predictions = {k: None if v is None else np.asarray(v)[..., slice_index] for k, v in predictions.items()}
        title = f"{title} (slice {slice_index})".strip()
    elif gt.ndim != 2:
        raise ValueError(f"labels must be 2D or 3D, got shape {gt.shape}")
    for name, pred in predictions.items():
        if pred is not None and np.shape(pred) != gt.shape:
            raise ValueError(f"prediction {name!r} has shape {np.shape(pred)}, ground truth {gt.shape}")
    shown = _display_image(image)
    fig, axes = plt.subplots(1, len(predictions), figsize=(3.6 * len(predictions), 3.8), squeeze=False, layout="constrained")
    for ax, (name, pred) in zip(axes[0], predictions.items()):
        ax.imshow(shown, cmap="gray", interpolation="nearest")
        _draw_contours(ax, gt, structures, GT_COLOR)
        if pred is not None:
            _draw_contours(ax, pred, structures, PRED_COLOR)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    styles = ", ".join(f"{name} {STYLE_NAMES[style]}" for style, name in zip(LINE_STYLES, structures))
    fig.suptitle(f"{title}\nground truth green, prediction blue; {styles}".strip(), fontsize=9)
    return _save(fig, Path(out_path))


def best_row(spec: TableSpec, runs_root: str | Path, prefix: str = "rm") -> str | None:
    """The row whose key starts with ``prefix`` with the highest mean Dice (structures and seeds pooled)."""
    best, best_dice = None, -np.inf
    for key, exp in spec.rows:
        if not key.startswith(prefix):
            continue
        runs = load_runs(runs_root, exp, spec.dataset, spec.structures)
        if not runs:
            continue
        dice = np.nanmean([df.loc[df.structure.isin(spec.structures), "dice"].mean() for df in runs.values()])
        if dice > best_dice:
            best, best_dice = key, dice
    return best


def _seed_dirs(runs_root: Path, experiment: str) -> dict[int, Path]:
    folder = runs_root / experiment
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := SEED_DIR.match(p.name)) and (p / "predictions").is_dir()}


def _run_cases(run_dir: Path) -> list[dict]:
    """Test cases of a run's data config (``config.yaml`` written by rmseg-train)."""
    from omegaconf import OmegaConf

    from rmseg.data import load_test_cases

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: the figures need the run's data config")
    return load_test_cases(OmegaConf.load(config).data)


def build_figures(
    runs_root: str | Path,
    out_dir: str | Path,
    *,
    specs: Sequence[tuple[TableSpec, str]] = ((TABLE1, "fig2_gs"), (TABLE2, "fig3_la")),
    max_cases: int = 2,
    load_cases: Callable[[Path], list[dict]] = _run_cases,
) -> tuple[list[Path], list[str]]:
    """Draw baseline vs best RM row for every spec; return the PNGs written and why any were skipped."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    written, skipped = [], []
    for spec, stem in specs:
        rows = dict(spec.rows)
        best = best_row(spec, runs_root)
        base_dirs = _seed_dirs(runs_root, rows[spec.baseline])
        best_dirs = _seed_dirs(runs_root, rows[best]) if best else {}
        seeds = sorted(set(base_dirs) & set(best_dirs))
        if not seeds:
            skipped.append(f"{spec.name}: no seed with saved predictions for both {spec.baseline} and an RM row")
            continue
        seed = seeds[0]
        cases = load_cases(base_dirs[seed])
        structures = _structures(spec, base_dirs[seed])
        drawn = 0
        for case in sorted(cases, key=lambda c: str(c["id"])):
            cid = str(case["id"])
            paths = [find_prediction(d[seed] / "predictions", cid) for d in (base_dirs, best_dirs)]
            if None in paths or drawn >= max_cases:
                continue
            preds = {f"{spec.baseline} (seed {seed})": load_prediction(paths[0]), f"{best} (seed {seed})": load_prediction(paths[1])}
            if np.asarray(case["label"]).ndim == 3:
                preds = {"ground truth": None, **preds}
            out = out_dir / f"{stem}_case{drawn + 1}.png"  # numbered: the case id is in the title
            written.append(overlay_figure(case["image"], case["label"], preds, structures, out, title=f"{spec.dataset}: case {cid}"))
            drawn += 1
        if not drawn:
            skipped.append(f"{spec.name}: no test case has saved predictions in both runs (seed {seed})")
    return written, skipped


def _structures(spec: TableSpec, run_dir: Path) -> dict[str, list[int]]:
    """Label ids of the spec's structures, from the run's summary.json."""
    summary = read_summary(run_dir / "summary.json")
    return {s: list(summary["structures"][s]) for s in spec.structures}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-figures", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/runs", help="runs root (default: results/runs)")
    parser.add_argument("--out", default="results/figures", help="output folder (default: results/figures)")
    parser.add_argument("--cases", type=int, default=2, help="cases per figure family (default 2)")
    args = parser.parse_args(argv)
    if not Path(args.runs).is_dir():
        print(f"rmseg-figures: runs root {args.runs} does not exist; train first (make demo / make reproduce-gs)", file=sys.stderr)
        return 2
    written, skipped = build_figures(args.runs, args.out, max_cases=args.cases)
    for path in written:
        print(f"wrote {path}")
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
