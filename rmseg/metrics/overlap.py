"""Overlap metrics on binary masks: confusion counts, Dice and Jaccard (medpy ``dc``/``jc`` semantics)."""

from __future__ import annotations

import numpy as np

from rmseg.metrics._checks import as_binary_mask, check_same_shape


def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> dict[str, int]:
    """Voxel counts ``tp, fp, fn, n_pred, n_ref`` of two boolean masks of one shape (no checks)."""
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(gt))
    return {"tp": tp, "fp": n_pred - tp, "fn": n_ref - tp, "n_pred": n_pred, "n_ref": n_ref}


def dice_from_counts(tp: int, n_pred: int, n_ref: int) -> float:
    """``2 tp / (n_pred + n_ref)``; 1.0 when both masks are empty (as medpy ``dc``)."""
    return 1.0 if n_pred + n_ref == 0 else 2.0 * tp / (n_pred + n_ref)


def jaccard_from_counts(tp: int, n_pred: int, n_ref: int) -> float:
    """``tp / |pred | gt|``; 1.0 when both masks are empty (as medpy ``jc``)."""
    union = n_pred + n_ref - tp
    return 1.0 if union == 0 else tp / union


def dice(pred: object, gt: object) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of two binary 2D/3D masks; 1.0 if both are empty."""
    p, g = as_binary_mask(pred, "pred"), as_binary_mask(gt, "gt")
    check_same_shape(p, g)
    counts = confusion_counts(p, g)
    return dice_from_counts(counts["tp"], counts["n_pred"], counts["n_ref"])


def jaccard(pred: object, gt: object) -> float:
    """Jaccard index ``|P & G| / |P | G|`` of two binary 2D/3D masks; 1.0 if both are empty."""
    p, g = as_binary_mask(pred, "pred"), as_binary_mask(gt, "gt")
    check_same_shape(p, g)
    counts = confusion_counts(p, g)
    return jaccard_from_counts(counts["tp"], counts["n_pred"], counts["n_ref"])
