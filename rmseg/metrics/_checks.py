"""Input checks shared by the metric functions: binary masks, label maps, spacing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_not_empty(array: np.ndarray, name: str) -> None:
    if array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}, no pixel at all: pass the whole image (an empty mask is "
                         "all zeros of the image's shape, not a 0-size array)")


def as_binary_mask(mask: object, name: str) -> np.ndarray:
    """Return ``mask`` as a boolean array after checking it is a 2D/3D binary (0/1) mask without NaN."""
    array = np.asarray(mask)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D (H, W) or 3D (H, W, D) mask, got shape {array.shape}; "
            "evaluate one image at a time without batch or channel axes"
        )
    _check_not_empty(array, name)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be numeric or boolean, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN; threshold or clean the prediction before evaluating it")
    if array.size and not ((array == 0) | (array == 1)).all():
        values = np.unique(array)
        raise ValueError(
            f"{name} is not binary: it holds values {values[:8].tolist()}"
            f"{' ...' if values.size > 8 else ''}; pass a 0/1 or boolean mask "
            "(threshold soft maps, or use evaluate_label_map for label maps)"
        )
    return array.astype(bool)


def as_label_map(labels: object, name: str) -> np.ndarray:
    """Return ``labels`` as an integer array after checking it is a 2D/3D map of integer labels."""
    array = np.asarray(labels)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D label map, got shape {array.shape}")
    _check_not_empty(array, name)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ValueError(f"{name} contains NaN; pass integer class labels")
        if (array != np.round(array)).any():
            raise ValueError(f"{name} holds non-integer values; pass integer class labels (argmax of the output)")
        return array.astype(np.int64)
    raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")


def check_same_shape(pred: np.ndarray, gt: np.ndarray, what: str = "") -> None:
    """ValueError unless the shapes are equal; a reversed shape is called out as SimpleITK's (z, y, x) order."""
    if pred.shape == gt.shape:
        return
    what = f" of {what}" if what else ""
    if pred.ndim > 1 and pred.shape == gt.shape[::-1]:
        raise ValueError(
            f"prediction{what} has shape {pred.shape}, the reverse of its label's {gt.shape}: the axes look reversed "
            "(SimpleITK order, sitk.GetArrayFromImage gives (z, y, x)); transpose the prediction "
            f"(np.transpose(pred, {tuple(range(pred.ndim))[::-1]})) before evaluating it"
        )
    raise ValueError(
        f"shape mismatch{what}: prediction {pred.shape} vs reference {gt.shape}; resample one onto the other"
    )


def as_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Spacing as a float64 vector of length ``ndim`` (ones when None); each entry finite and > 0."""
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=np.float64)
    if values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing {np.asarray(spacing).tolist()} must hold one value per spatial axis ({ndim} for these masks)"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"spacing {values.tolist()} must be finite and positive on every axis")
    return values
