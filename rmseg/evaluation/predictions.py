"""Prediction files: label maps written during evaluation (``<id>.png`` in 2D, ``<id>.nii.gz`` in 3D) and read back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmseg.evaluation.config import EvalConfig

def ids_to_save(case_ids: Sequence[str], eval_cfg: EvalConfig) -> list[str]:
    """The ids whose predictions are saved: none, the first ``num_saved`` in sorted order, or all."""
    if eval_cfg.save_predictions == "none":
        return []
    ordered = sorted(case_ids)
    return ordered if eval_cfg.save_predictions == "all" else ordered[: eval_cfg.num_saved]


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
