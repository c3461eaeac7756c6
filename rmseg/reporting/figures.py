"""Contour overlays like the paper's Fig. 2 (Drishti-GS) and Fig. 3 (LA), drawn from saved predictions.

``make figures`` (``python -m rmseg.cli.figures``) finds every runs root under ``results/runs`` (as
``make tables`` does) and draws, for Table 1 (``fig2_gs``) and Table 2 (``fig3_la``), the baseline row
and the best residual-moment row (highest mean Dice over structures and seeds), at the lowest seed both
have, for the first test cases (sorted ids) whose predictions both runs saved. One PNG per case, into the
same relative folder under ``results/figures``; each panel is one row's prediction (blue) over the
ground truth (green), cropped around the structure (the optic disc; the atrium on its largest axial
slice), titled with that prediction's Dice; a panel whose prediction is empty on the shown slice says so.

Predictions are read from ``<run>/predictions/<id>.png|.nii.gz`` (``eval.save_predictions=some`` saves
the first ``eval.num_saved`` ids, the default) or else from the copies the figure step keeps beside its
figures, ``<figures>/predictions/<experiment>/seed<k>/``: those are committed, so a clone redraws the
figures from them. Images and ground truth come from the test cases of the run's data config, at its
``data.root`` or under ``$RMSEG_DATA_ROOT``. When a figure cannot be drawn, the step says what it lacks;
it exits with status 1 when that figure was drawn before (a committed figure that cannot be redrawn) or
data is missing, and only notes figures of runs that never kept predictions.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from skimage.measure import find_contours  # noqa: E402

from rmseg.evaluation import current_umask, find_prediction, load_prediction, read_summary  # noqa: E402
from rmseg.reporting.tables import TABLE1, TABLE2, TableSpec, find_runs_roots, load_runs  # noqa: E402

GT_COLOR, PRED_COLOR = "#00c000", "#1060ff"
LINE_STYLES = ("-", "--", ":", "-.")
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}
FIGURES = ((TABLE1, "fig2_gs"), (TABLE2, "fig3_la"))
#: Margin around the drawn structures, as a fraction of their bounding box (at least MIN_CROP pixels shown).
CROP_MARGIN, MIN_CROP = 0.35, 32


def _display_image(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)`` or ``(H, W)`` scaled to [0, 1] for imshow."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = np.moveaxis(image, 0, -1)
        if image.shape[-1] == 1:
            image = image[..., 0]
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def dice(pred: np.ndarray, gt: np.ndarray, ids: Sequence[int]) -> float:
    """Dice of one structure (label ids ``ids``); NaN when both masks are empty."""
    a, b = np.isin(pred, ids), np.isin(gt, ids)
    total = int(a.sum() + b.sum())
    return 2.0 * int((a & b).sum()) / total if total else float("nan")


def crop_box(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[slice, slice]:
    """A square (where the image allows) of rows and columns around the union of ``masks``, with
    :data:`CROP_MARGIN` and at least :data:`MIN_CROP` pixels a side; the whole image when all are empty."""
    union = np.any([np.asarray(m, bool) for m in masks], axis=0) if masks else np.zeros(shape, bool)
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    extents = [np.flatnonzero(union.any(axis=1 - axis))[[0, -1]] + [0, 1] for axis in range(2)]
    side = max(max(hi - lo for lo, hi in extents) * (1 + 2 * CROP_MARGIN), MIN_CROP)
    box = []
    for (lo, hi), size in zip(extents, shape):
        length = int(min(size, round(side)))
        start = int(max(0, min(size - length, round((lo + hi) / 2 - length / 2))))
        box.append(slice(start, start + length))
    return box[0], box[1]


def _draw_contours(ax, label: np.ndarray, structures: Mapping[str, Sequence[int]], color: str) -> None:
    for style, ids in zip(LINE_STYLES, structures.values()):
        for contour in find_contours(np.isin(label, ids).astype(float), 0.5):
            ax.plot(contour[:, 1], contour[:, 0], color=color, linestyle=style, linewidth=1.6)


def _save(fig, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".png")
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
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
    crop: bool = True,
) -> Path:
    """One panel per entry of ``predictions`` (a None prediction draws the ground truth alone), each
    titled with the prediction's Dice per structure (over the whole image or volume).

    2D: ``image (C, H, W)``, labels ``(H, W)``. 3D: ``image (C, H, W, D)``, labels ``(H, W, D)``; the
    axial slice ``slice_index`` (default: the slice with the most foreground in ``gt``) is drawn, and a
    panel whose prediction has none of the structures on it says so. ``crop``: show only the region
    around the ground truth (:func:`crop_box`; the predictions' region where the ground truth is empty).
    """
    gt = np.asarray(gt)
    for name, pred in predictions.items():
        if pred is not None and np.shape(pred) != gt.shape:
            raise ValueError(f"prediction {name!r} has shape {np.shape(pred)}, ground truth {gt.shape}")
    scores = {name: {s: dice(pred, gt, ids) for s, ids in structures.items()}
              for name, pred in predictions.items() if pred is not None}
    if gt.ndim == 3:
        if slice_index is None:
            slice_index = int(np.argmax((gt > 0).sum(axis=(0, 1))))
        if not 0 <= slice_index < gt.shape[2]:
            raise ValueError(f"slice_index {slice_index} outside 0..{gt.shape[2] - 1}")
        image, gt = np.asarray(image)[..., slice_index], gt[..., slice_index]
        predictions = {k: None if v is None else np.asarray(v)[..., slice_index] for k, v in predictions.items()}
        title = f"{title}, axial slice {slice_index}".strip(", ")
    elif gt.ndim != 2:
        raise ValueError(f"labels must be 2D or 3D, got shape {gt.shape}")
    # cropped around the ground truth (the optic disc; the atrium), as the paper's figures: a prediction's
    # stray regions elsewhere show in its Dice, not in the panel
    foreground = [np.isin(gt, [i for ids in structures.values() for i in ids])]
    if not foreground[0].any():  # nothing to centre on: the region of the predictions
        foreground = [np.isin(p, [i for ids in structures.values() for i in ids]) for p in predictions.values()
                      if p is not None] or foreground
    rows, cols = crop_box(foreground, gt.shape) if crop else (slice(None), slice(None))
    shown = _display_image(image)[rows, cols]
    fig, axes = plt.subplots(1, len(predictions), figsize=(3.3 * len(predictions), 3.9), squeeze=False, layout="constrained")
    for ax, (name, pred) in zip(axes[0], predictions.items()):
        ax.imshow(shown, cmap="gray", interpolation="bilinear")
        _draw_contours(ax, gt[rows, cols], structures, GT_COLOR)
        if pred is None:
            ax.set_title(name, fontsize=9)
        else:
            _draw_contours(ax, pred[rows, cols], structures, PRED_COLOR)
            shown_dice = ", ".join(f"{s} {d:.3f}" for s, d in scores[name].items())
            ax.set_title(f"{name}\nDice {shown_dice}" + (" (volume)" if slice_index is not None else ""), fontsize=9)
            absent = [s for s, ids in structures.items() if not np.isin(pred, ids).any()]
            if absent:
                where = "\non this slice" if slice_index is not None else ""
                ax.text(0.5, 0.5, f"no predicted {', '.join(absent)}{where}", transform=ax.transAxes,
                        ha="center", va="center", fontsize=9, color="white",
                        bbox={"facecolor": "black", "alpha": 0.7, "edgecolor": "none"})
        ax.set_axis_off()
    handles = [Line2D([], [], color=GT_COLOR, label="ground truth"), Line2D([], [], color=PRED_COLOR, label="prediction")]
    handles += [Line2D([], [], color="black", linestyle=style, label=name) for style, name in zip(LINE_STYLES, structures)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
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
        dice_mean = np.nanmean([df.loc[df.structure.isin(spec.structures), "dice"].mean() for df in runs.values()])
        if dice_mean > best_dice:
            best, best_dice = key, dice_mean
    return best


def resolve_data_root(data_cfg: Mapping) -> dict:
    """The run's data config with a ``root`` that exists: as recorded, else the same folder name under
    ``$RMSEG_DATA_ROOT``; FileNotFoundError saying where it looked and how to point at the data otherwise."""
    data = dict(data_cfg)
    recorded = Path(str(data["root"]))
    if recorded.exists():
        return data
    tried = [str(recorded)]
    env = os.environ.get("RMSEG_DATA_ROOT")
    if env:
        candidate = Path(env) / recorded.name
        if candidate.exists():
            return {**data, "root": str(candidate)}
        tried.append(str(candidate))
    raise FileNotFoundError(
        f"the {data['name']} test images and labels are not at {' nor '.join(tried)}: set "
        f"RMSEG_DATA_ROOT=/path/holding/{recorded.name} (make figures DATA=/path/holding/{recorded.name}), "
        "or get the data with make data"
    )


def _run_cases(run_dir: Path) -> list[dict]:
    """Test cases of a run's data config (``config.yaml`` written by rmseg-train)."""
    from omegaconf import OmegaConf

    from rmseg.data import load_test_cases

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: the figures need the run's data config")
    data = OmegaConf.to_container(OmegaConf.load(config).data, resolve=True)
    return load_test_cases(OmegaConf.create(resolve_data_root(data)))


def _prediction(runs_root: Path, copies: Path, experiment: str, seed: int, case_id: str) -> Path | None:
    """A run's saved prediction, else the figure step's kept copy of it."""
    for folder in (runs_root / experiment / f"seed{seed}" / "predictions", copies / experiment / f"seed{seed}"):
        if folder.is_dir() and (path := find_prediction(folder, case_id)) is not None:
            return path
    return None


def _keep_copy(path: Path, copies: Path, experiment: str, seed: int, case_id: str) -> None:
    """Keep a shown prediction beside the figures as ``<id>.nii.gz`` (a gzip-compressed label map of any
    dimension), so a clone redraws the figure from what is committed."""
    target = copies / experiment / f"seed{seed}" / f"{case_id}.nii.gz"
    if path.resolve() != target.resolve():
        import nibabel as nib

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp.nii.gz")
        nib.save(nib.Nifti1Image(load_prediction(path).astype(np.uint8), np.eye(4)), tmp)
        tmp.replace(target)


def build_figures(
    runs_root: str | Path,
    out_dir: str | Path,
    *,
    specs: Sequence[tuple[TableSpec, str]] = FIGURES,
    max_cases: int = 2,
    load_cases: Callable[[Path], list[dict]] = _run_cases,
) -> tuple[list[Path], list[str], list[str]]:
    """Draw baseline vs best RM row for every spec whose baseline has runs. Returns the PNGs written; for
    each figure that could not be drawn, what it lacks (an error where a committed figure of that name
    exists: it could not be redrawn); and the figures never drawn (no RM row has runs yet, or no run kept
    its predictions)."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    copies = out_dir / "predictions"
    written, lacking, not_drawn = [], [], []
    for spec, stem in specs:
        rows = dict(spec.rows)
        base_runs = load_runs(runs_root, rows[spec.baseline], spec.dataset, spec.structures)
        if not base_runs:
            continue
        drawn_before = any(out_dir.glob(f"{stem}_case*.png"))
        best = best_row(spec, runs_root)
        if best is None:
            (lacking if drawn_before else not_drawn).append(
                f"{out_dir / stem}: no residual-moment row of {spec.name} has runs under {runs_root}")
            continue
        experiments = (rows[spec.baseline], rows[best])
        seeds = sorted(set(base_runs) & set(load_runs(runs_root, rows[best], spec.dataset, spec.structures)))
        chosen = None
        for seed in seeds:
            ids = sorted(set.intersection(*[set(load_runs(runs_root, e, spec.dataset, spec.structures)[seed]["id"])
                                            for e in experiments]))
            ready = [cid for cid in ids if all(_prediction(runs_root, copies, e, seed, cid) for e in experiments)]
            if ready:
                chosen = seed, ready[:max_cases]
                break
        if chosen is None:
            (lacking if drawn_before else not_drawn).append(
                f"{out_dir / stem}: no saved prediction of a common test case of {' and '.join(experiments)} at seed(s) "
                f"{seeds} (looked in {runs_root}/<experiment>/seed<k>/predictions/ and {copies}/<experiment>/seed<k>/); "
                f"save them with rmseg-eval --checkpoint <run>/checkpoint.pt --out <folder> --save-predictions some"
            )
            continue
        seed, case_ids = chosen
        run_dir = runs_root / experiments[0] / f"seed{seed}"
        try:
            cases = {str(c["id"]): c for c in load_cases(run_dir)}
        except (FileNotFoundError, ValueError) as err:
            lacking.append(f"{out_dir / stem}: {err}")
            continue
        structures = {s: list(read_summary(run_dir / "summary.json")["structures"][s]) for s in spec.structures}
        for number, cid in enumerate(case_ids, start=1):
            paths = [_prediction(runs_root, copies, e, seed, cid) for e in experiments]
            preds = {f"{key} (seed {seed})": load_prediction(p) for key, p in zip((spec.baseline, best), paths)}
            case = cases[cid]
            if np.asarray(case["label"]).ndim == 3:
                preds = {"ground truth": None, **preds}
            out = out_dir / f"{stem}_case{number}.png"  # numbered: the case id is in the title
            written.append(overlay_figure(case["image"], case["label"], preds, structures, out,
                                          title=f"{spec.name} {spec.dataset}: test case {cid}"))
            for experiment, path in zip(experiments, paths):
                _keep_copy(path, copies, experiment, seed, cid)
    return written, lacking, not_drawn
