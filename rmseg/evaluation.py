"""Test-set evaluation: inference (whole image / sliding window), per-case metrics, ``summary.json``.

2D cases are predicted whole. 3D cases use MONAI's ``sliding_window_inference`` with the strides of the
comparison the paper follows (UA-MT / Ma et al.: 18 voxels in-plane, 4 in depth on a 112x112x80 window),
probabilities averaged over overlapping windows, then argmax. MONAI takes the step as a per-axis
``overlap``; :func:`sliding_window_overlap` converts strides into overlaps that MONAI turns back into
exactly those strides (its window starts then equal UA-MT's ``min(stride * i, size - roi)``).

Per-case rows carry the keys of ``rmseg.metrics.evaluate_label_map``; :func:`write_summary` pools them
into ``summary.json`` (format in docs/ARCHITECTURE.md) and ``per_case.csv``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from rmseg.data.resample import downsample_image, upsample_probabilities
from rmseg.metrics import evaluate_cases
from rmseg.metrics._checks import check_same_shape
from rmseg.speed import in_format, memory_format

METRICS = ("dice", "jaccard", "hd95", "asd")
COUNTS = ("tp", "fp", "fn", "n_pred", "n_ref")
FLAGS = ("pred_empty", "ref_empty", "penalized")
ROW_COLUMNS = ("id", "structure", *METRICS, *COUNTS, *FLAGS)
SAVE_CHOICES = ("none", "some", "all")


@dataclass
class EvalConfig:
    """Schema of the ``eval`` config group (``configs/eval/default.yaml``).

    ``roi_size``/``strides`` drive 3D sliding-window inference (ignored in 2D, where images are
    predicted whole). ``save_predictions``: ``none``, ``some`` (the first ``num_saved`` test ids in
    sorted order: what ``make figures`` draws) or ``all``. ``amp`` (autocast: bfloat16 on CPU, float16 on
    CUDA) and ``channels_last`` (the model and its inputs in channels-last memory format) change how the
    forward pass runs, not what it computes, up to rounding (``benchmarks/inference.py`` times them).
    """

    roi_size: list[int] = field(default_factory=lambda: [112, 112, 80])
    strides: list[int] = field(default_factory=lambda: [18, 18, 4])
    sw_batch_size: int = 4
    blend_mode: str = "constant"
    amp: bool = False
    channels_last: bool = False
    convention: str = "medpy"
    workers: int = 1
    save_predictions: str = "some"
    num_saved: int = 4


def eval_config(cfg: EvalConfig | Mapping | DictConfig | None = None) -> EvalConfig:
    """Validated :class:`EvalConfig` from a dataclass, dict or DictConfig (None: the defaults)."""
    if cfg is None:
        return EvalConfig()
    if isinstance(cfg, EvalConfig):
        out = cfg
    else:
        merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg)
        out = OmegaConf.to_object(merged)
    if len(out.roi_size) != len(out.strides):
        raise ValueError(
            f"eval.roi_size {list(out.roi_size)} and eval.strides {list(out.strides)} must have one entry per axis"
        )
    for r, s in zip(out.roi_size, out.strides):
        if r < 1 or s < 1 or s > r:
            raise ValueError(
                f"eval.strides {list(out.strides)} must be in [1, roi_size] per axis (roi_size {list(out.roi_size)})"
            )
    if out.sw_batch_size < 1:
        raise ValueError(f"eval.sw_batch_size must be >= 1, got {out.sw_batch_size}")
    if out.workers < 1:
        raise ValueError(f"eval.workers must be >= 1, got {out.workers}")
    if out.save_predictions not in SAVE_CHOICES:
        raise ValueError(f"eval.save_predictions must be one of {SAVE_CHOICES}, got {out.save_predictions!r}")
    if out.num_saved < 0:
        raise ValueError(f"eval.num_saved must be >= 0, got {out.num_saved}")
    return out


def sliding_window_overlap(roi_size: Sequence[int], strides: Sequence[int]) -> tuple[float, ...]:
    """Per-axis MONAI ``overlap`` giving exactly ``strides``.

    MONAI steps by ``int(roi * (1 - overlap))``; ``overlap = 1 - (stride + 0.5) / roi`` lands in the
    middle of the interval that floors to ``stride``, so rounding error cannot change the step.
    """
    if len(roi_size) != len(strides):
        raise ValueError(f"roi_size {list(roi_size)} and strides {list(strides)} differ in length")
    return tuple(1.0 - (s + 0.5) / r for r, s in zip(roi_size, strides))


def softmax_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Default ``probabilities_fn``: softmax over the class axis of ``(B, C, *S)`` logits."""
    return torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    eval_cfg: EvalConfig,
    probabilities_fn: Callable[[torch.Tensor], torch.Tensor] = softmax_probabilities,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class probabilities ``(C, *S)`` (float32, on CPU) of one ``(C_in, *S)`` image.

    2D: one forward pass on the whole image. 3D: sliding window with ``eval_cfg`` roi/strides,
    probabilities (not logits) averaged where windows overlap. With ``eval_cfg.channels_last`` the model is
    put in channels-last memory format (in place).
    """
    from monai.inferers import sliding_window_inference

    x = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image, dtype=torch.float32)
    x = x.unsqueeze(0).to(device)
    spatial_dims = x.ndim - 2
    device_type = torch.device(device).type
    fmt = memory_format(spatial_dims, eval_cfg.channels_last, "eval.channels_last")
    in_format(model, fmt).eval()

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device_type, enabled=eval_cfg.amp):
            logits = model(in_format(batch, fmt))
        return probabilities_fn(logits.float())

    if spatial_dims == 2:
        probs = predictor(x)
    elif spatial_dims == 3:
        if len(eval_cfg.roi_size) != 3:
            raise ValueError(f"eval.roi_size {list(eval_cfg.roi_size)} needs 3 entries for a 3D image")
        probs = sliding_window_inference(
            x,
            roi_size=list(eval_cfg.roi_size),
            sw_batch_size=eval_cfg.sw_batch_size,
            predictor=predictor,
            overlap=sliding_window_overlap(eval_cfg.roi_size, eval_cfg.strides),
            mode=eval_cfg.blend_mode,
        )
    else:
        raise ValueError(f"image must be (C_in, H, W) or (C_in, H, W, D), got shape {tuple(x.shape[1:])}")
    return probs[0].float().cpu()


def evaluate_predictions(
    predictions: Mapping[str, np.ndarray],
    cases: Sequence[Mapping],
    *,
    structures: Mapping[str, Sequence[int]],
    eval_cfg: EvalConfig | None = None,
) -> pd.DataFrame:
    """Per-case, per-structure metric rows of label maps ``{id: (*S) int}`` against ``cases``.

    Every test case needs a prediction of its label's shape (ValueError naming the case otherwise).
    Metrics come from ``rmseg.metrics.evaluate_cases`` over ``eval_cfg.workers`` processes.
    The returned frame carries the test ids in ``df.attrs["case_ids"]`` and the label shape shared by
    every case (None when they differ) in ``df.attrs["eval_grid"]``, for :func:`write_summary`.
    """
    eval_cfg = eval_config(eval_cfg)
    structures = {str(k): [int(v) for v in vs] for k, vs in dict(structures).items()}
    jobs = []
    for case in cases:
        cid = str(case["id"])
        if cid not in predictions:
            raise ValueError(f"no prediction for test case {cid!r}: predict every test case before evaluating")
        pred, gt = np.asarray(predictions[cid]), np.asarray(case["label"])
        check_same_shape(pred, gt, f"case {cid!r}")
        check_label_values(pred, structures, f"prediction of case {cid!r}")
        spacing = tuple(float(s) for s in case.get("spacing") or (1.0,) * gt.ndim)
        jobs.append((cid, pred, gt, spacing))
    rows = evaluate_cases(jobs, structures, workers=min(eval_cfg.workers, max(len(jobs), 1)), convention=eval_cfg.convention)
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    df.attrs["case_ids"] = [str(c["id"]) for c in cases]
    grids = {tuple(np.shape(c["label"])) for c in cases}
    df.attrs["eval_grid"] = list(grids.pop()) if len(grids) == 1 else None
    return df


def evaluate_model(
    model: torch.nn.Module,
    cases: Sequence[Mapping],
    *,
    data_cfg: Mapping | DictConfig,
    eval_cfg: EvalConfig | Mapping | DictConfig | None = None,
    probabilities_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    predictions_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Predict every test case and return per-case, per-structure metric rows.

    ``cases``: ``rmseg.data.load_test_cases`` items (id, image ``(C_in, *S)``, label ``(*S)``,
    spacing, optional ``downsample`` factors: predicted on that coarser grid, probabilities resampled
    back and scored on the label's grid). ``probabilities_fn``: the loss's ``probabilities`` (default softmax). Label maps are
    written to ``predictions_dir`` (PNG in 2D, NIfTI in 3D) as ``eval_cfg.save_predictions`` asks.
    """
    eval_cfg = eval_config(eval_cfg)
    probabilities_fn = probabilities_fn or softmax_probabilities
    to_save = set(ids_to_save([str(c["id"]) for c in cases], eval_cfg))
    if to_save and predictions_dir is None:
        raise ValueError(
            f"eval.save_predictions={eval_cfg.save_predictions!r} needs predictions_dir (or set it to 'none')"
        )
    predictions = {}
    for case in cases:
        factors = tuple(case.get("downsample") or (1,) * np.asarray(case["label"]).ndim)
        image = downsample_image(np.asarray(case["image"]), factors)
        probs = predict_probabilities(
            model, image, eval_cfg=eval_cfg, probabilities_fn=probabilities_fn, device=device
        )
        probs = upsample_probabilities(probs, factors, np.asarray(case["label"]).shape)
        label_map = probs.argmax(0).numpy().astype(np.uint8)
        predictions[str(case["id"])] = label_map
        if str(case["id"]) in to_save:
            save_prediction(predictions_dir, str(case["id"]), label_map, case.get("spacing"))
    return evaluate_predictions(predictions, cases, structures=data_cfg["structures"], eval_cfg=eval_cfg)


def ids_to_save(case_ids: Sequence[str], eval_cfg: EvalConfig) -> list[str]:
    """The ids whose predictions are saved: none, the first ``num_saved`` in sorted order, or all."""
    if eval_cfg.save_predictions == "none":
        return []
    ordered = sorted(case_ids)
    return ordered if eval_cfg.save_predictions == "all" else ordered[: eval_cfg.num_saved]


# ---------------------------------------------------------------- prediction files


def save_prediction(
    out_dir: str | Path, case_id: str, label_map: np.ndarray, spacing: Sequence[float] | None = None
) -> Path:
    """Write a label map: ``<id>.png`` (2D, uint8 class indices) or ``<id>.nii.gz`` (3D, nibabel,
    affine = diag(spacing)). Written to a temporary name and renamed, so a file present is complete."""
    label_map = np.asarray(label_map)
    if label_map.min(initial=0) < 0 or label_map.max(initial=0) > 255:
        raise ValueError(f"label map of {case_id!r} must hold class indices in [0, 255]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if label_map.ndim == 2:
        from PIL import Image

        path = out_dir / f"{case_id}.png"
        tmp = out_dir / f".{case_id}.tmp.png"
        Image.fromarray(label_map.astype(np.uint8)).save(tmp)
    elif label_map.ndim == 3:
        import nibabel as nib

        spacing = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
        path = out_dir / f"{case_id}.nii.gz"
        tmp = out_dir / f".{case_id}.tmp.nii.gz"
        nib.save(nib.Nifti1Image(label_map.astype(np.uint8), np.diag([*spacing, 1.0])), tmp)
    else:
        raise ValueError(f"label map of {case_id!r} must be 2D or 3D, got shape {label_map.shape}")
    os.replace(tmp, path)
    return path


def load_prediction(path: str | Path) -> np.ndarray:
    """Read a label map written by :func:`save_prediction` (or any PNG / NIfTI of class indices); a file
    that cannot be read is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {path} does not exist")
    if path.suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as image:
                arr = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"cannot read prediction {path} ({err}): write it again as a label PNG") from err
        if arr.ndim != 2:
            raise ValueError(f"{path} is not a single-channel label PNG (shape {arr.shape})")
        return arr.astype(np.int64)
    if path.name.endswith((".nii", ".nii.gz")):
        import zlib

        import nibabel as nib

        try:
            return np.asarray(nib.load(path).dataobj).astype(np.int64)
        except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
            raise ValueError(f"cannot read prediction {path} ({err}): write it again as a NIfTI label map") from err
    raise ValueError(f"{path}: predictions must be .png (2D) or .nii/.nii.gz (3D)")


def check_label_values(pred: np.ndarray, structures: Mapping[str, Sequence[int]], what: str) -> None:
    """ValueError when ``pred`` holds a value outside the dataset's classes ``0..K`` (K: the largest label id
    of ``structures``)."""
    top = max(int(v) for ids in structures.values() for v in ids)
    if pred.size and (pred.min() < 0 or pred.max() > top):
        values = np.unique(pred)
        raise ValueError(
            f"{what} holds values {values[:8].tolist()}{' ...' if values.size > 8 else ''} but the dataset's classes "
            f"are 0..{top}: save class indices (argmax of the output), not probabilities or 0/255 masks"
        )


def find_prediction(folder: str | Path, case_id: str) -> Path | None:
    """The prediction file of ``case_id`` in ``folder`` (``<id>.png``, ``<id>.nii.gz`` or ``<id>.nii``)."""
    for suffix in (".png", ".nii.gz", ".nii"):
        path = Path(folder) / f"{case_id}{suffix}"
        if path.is_file():
            return path
    return None


def load_prediction_folder(folder: str | Path, case_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Label maps of ``case_ids`` from ``folder``; every id must have a file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"predictions folder {folder} does not exist")
    missing = [cid for cid in case_ids if find_prediction(folder, cid) is None]
    if missing:
        raise FileNotFoundError(
            f"{folder} has no prediction (<id>.png / <id>.nii.gz) for test case(s) {missing[:10]}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    return {cid: load_prediction(find_prediction(folder, cid)) for cid in case_ids}


# ---------------------------------------------------------------- summary.json


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def current_umask() -> int:
    """The process's umask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # what open() gives, not mkstemp's 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summarize(per_case: pd.DataFrame, structures: Sequence[str]) -> dict:
    """``mean``/``std`` (over cases, population std, NaN ignored) and flag counts per structure."""
    mean, std, flags = {}, {}, {}
    for structure in structures:
        rows = per_case[per_case["structure"] == structure]
        values = rows[list(METRICS)].astype(float).replace([np.inf, -np.inf], np.nan)
        mean[structure] = {m: _finite_or_none(values[m].mean()) for m in METRICS}
        std[structure] = {m: _finite_or_none(values[m].std(ddof=0)) for m in METRICS}
        flags[structure] = {f: int(rows[f].astype(bool).sum()) for f in FLAGS}
        flags[structure]["undefined"] = {m: int(values[m].isna().sum()) for m in METRICS}
    return {"mean": mean, "std": std, "flags": flags}


def write_summary(out_dir: str | Path, per_case_df: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Write ``summary.json`` and ``per_case.csv`` into ``out_dir`` (each via temp file + rename).

    ``meta`` holds experiment, seed, dataset, structures ({name: label ids}), convention, iterations,
    wall_time_s; optionally ``distance_unit_scale`` (paper distance units per evaluated pixel/voxel, read
    by ``rmseg.tables``). ``eval_grid`` (the evaluated label shape, null when cases differ) comes from
    ``meta`` or ``per_case_df.attrs``. The test ids come from ``meta["case_ids"]`` or ``per_case_df.attrs["case_ids"]``
    (set by :func:`evaluate_model`); a test id or structure without a row is a ValueError.
    Non-finite metric values are written as ``null`` (counted under ``flags.undefined``).
    """
    required = ("experiment", "seed", "dataset", "structures")
    missing_keys = [k for k in required if k not in meta]
    if missing_keys:
        raise ValueError(f"summary meta lacks {missing_keys}; give experiment, seed, dataset, structures")
    case_ids = meta.get("case_ids", per_case_df.attrs.get("case_ids"))
    if case_ids is None:
        raise ValueError("write_summary needs the test ids: meta['case_ids'] or per_case_df.attrs['case_ids']")
    absent_cols = [c for c in ROW_COLUMNS if c not in per_case_df.columns]
    if absent_cols:
        raise ValueError(f"per-case rows lack columns {absent_cols}")
    structures = list(dict(meta["structures"]))
    present = set(zip(per_case_df["id"].astype(str), per_case_df["structure"].astype(str)))
    missing = [(cid, s) for cid in map(str, case_ids) for s in structures if (cid, s) not in present]
    if missing:
        raise ValueError(f"no metric row for (case, structure) {missing[:10]}: every test case must be evaluated")
    extra = sorted({cid for cid, _ in present} - set(map(str, case_ids)))
    if extra:
        raise ValueError(f"rows for case ids {extra[:10]} that are not test cases")
    if per_case_df.duplicated(["id", "structure"]).any():
        dup = per_case_df.loc[per_case_df.duplicated(["id", "structure"]), ["id", "structure"]].values.tolist()
        raise ValueError(f"duplicate rows for (case, structure) {dup[:10]}")

    rows = per_case_df[list(ROW_COLUMNS)].sort_values(["id", "structure"]).reset_index(drop=True)
    cases = [{k: _finite_or_none(v) for k, v in rec.items()} for rec in rows.to_dict("records")]
    meta_out = {k: (OmegaConf.to_container(v) if isinstance(v, DictConfig) else v) for k, v in meta.items()}
    meta_out.pop("case_ids", None)
    meta_out.setdefault("eval_grid", per_case_df.attrs.get("eval_grid"))
    summary = {**meta_out, "cases": cases, **summarize(rows, structures)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out_dir / "per_case.csv", rows.to_csv(index=False))
    _atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")


def read_summary(path: str | Path) -> dict:
    """Load and check a ``summary.json``: required keys, one row per (case, structure), metrics present.

    Raises FileNotFoundError / ValueError naming the file and what is wrong. ``null`` metrics become NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"summary {path} does not exist")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"summary {path} is not valid JSON ({err}); re-run rmseg-eval on that run") from err
    if not isinstance(summary, dict):
        raise ValueError(f"summary {path} must hold a JSON object")
    missing = [k for k in ("experiment", "seed", "dataset", "structures", "cases") if k not in summary]
    if missing:
        raise ValueError(f"summary {path} lacks keys {missing}; re-run rmseg-eval on that run")
    if not isinstance(summary["cases"], list) or not summary["cases"]:
        raise ValueError(f"summary {path}: 'cases' must be a non-empty list")
    for i, case in enumerate(summary["cases"]):
        absent = [k for k in ("id", "structure", *METRICS) if k not in case]
        if absent:
            raise ValueError(f"summary {path}: cases[{i}] lacks {absent}")
        for m in METRICS:
            v = case[m]
            if v is None:
                case[m] = float("nan")
            elif not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"summary {path}: cases[{i}].{m} = {v!r} is not a number")
    pairs = [(str(c["id"]), str(c["structure"])) for c in summary["cases"]]
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"summary {path}: duplicate (case, structure) rows")
    unknown = sorted({s for _, s in pairs} - set(summary["structures"]))
    if unknown:
        raise ValueError(f"summary {path}: rows for structures {unknown} not in 'structures'")
    ids, seen = {cid for cid, _ in pairs}, set(pairs)
    incomplete = sorted((cid, s) for cid in ids for s in summary["structures"] if (cid, s) not in seen)
    if incomplete:
        raise ValueError(f"summary {path}: no row for (case, structure) {incomplete[:10]}")
    return summary
