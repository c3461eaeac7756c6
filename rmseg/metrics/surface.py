"""Surface-distance metrics (HD95, ASD) on binary masks: medpy 0.5.2's values, computed much faster.

Definitions (``connectivity=1`` as medpy's default):

* surface ``S(M) = M XOR erode(M, cross)``, the cross being the connectivity-1 structuring element and
  voxels outside the image counting as background (scipy's ``border_value=0``);
* directed distances ``d(P->G) = {min_{g in S(G)} ||(p - g) * spacing|| : p in S(P)}``, one per surface
  voxel of the prediction, and ``d(G->P)`` the other way round.

Conventions (``convention=``):

* ``"medpy"`` (default, the paper's): ``HD95 = P95(d(P->G) ++ d(G->P))`` (pooled);
  ``ASD = mean(d(P->G))`` (directed, as ``medpy.metric.binary.asd(pred, gt)``).
* ``"assd"``: ``HD95`` as medpy; ``ASD = mean(d(P->G) ++ d(G->P))``, the symmetric surface distance
  pooled over both surfaces (medpy's own ``assd`` instead averages the two directed means).
* ``"monai"``: ``HD95 = max(P95(d(P->G)), P95(d(G->P)))`` as
  ``monai.metrics.compute_hausdorff_distance(percentile=95)``; ``ASD = mean(d(P->G))`` as
  ``compute_average_surface_distance(symmetric=False)``.

``P95`` is numpy's linearly interpolated 95th percentile (as medpy, and MONAI's ``torch.quantile``).

Why not medpy itself: medpy runs two erosions and a Euclidean distance transform over the whole
image. Here both masks are cropped to the bounding box of their union (zero-padded by one voxel, which
is exactly what lies around it), surfaces are found with six shifted ANDs instead of
``scipy.ndimage.binary_erosion`` (same result, ~5x faster), and distances come from a
``scipy.spatial.cKDTree`` over surface voxels scaled by the spacing; voxels lying on both surfaces
are at distance 0 and are not queried. ``benchmarks/metrics.py`` measures it against medpy and MONAI
(``results/benchmarks/metrics.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from rmseg.metrics._checks import as_binary_mask, as_spacing, check_same_shape

CONVENTIONS = ("medpy", "assd", "monai")


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is unknown; choose one of {CONVENTIONS}")


def check_empty_penalty(empty_penalty: float | None) -> None:
    if empty_penalty is not None and not (float(empty_penalty) >= 0):
        raise ValueError(
            f"empty_penalty {empty_penalty!r} must be a non-negative distance, or None for the image diagonal"
        )


def image_diagonal(shape: Sequence[int], spacing: np.ndarray) -> float:
    """Length of the image's diagonal in spacing units: ``sqrt(sum_k (shape_k * spacing_k)^2)``."""
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * spacing) ** 2)))


def bounding_box(mask: np.ndarray) -> list[slice] | None:
    """Slices of the smallest box holding every True (non-zero) voxel of ``mask``; None if it has none.

    Reduces the first axis over contiguous rows first, then the small projection, which is ~10x faster
    than ``np.any`` over several axes of the whole array.
    """
    if mask.size == 0:
        return None
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return None
    projection = mask[rows[0] : rows[-1] + 1].any(axis=0)
    box = [slice(rows[0], rows[-1] + 1)]
    for axis in range(projection.ndim):
        hits = np.flatnonzero(projection.any(axis=tuple(a for a in range(projection.ndim) if a != axis)))
        box.append(slice(hits[0], hits[-1] + 1))
    return box


def union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``pred | gt`` (masks or label maps of one shape, non-zero = True);
    None if both are all zero."""
    boxes = [box for box in (bounding_box(pred), bounding_box(gt)) if box is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(pred.ndim))


def crop_to_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views of both boolean masks on the bounding box of ``pred | gt`` (empty views if both are empty)."""
    box = union_box(pred, gt)
    box = (slice(0, 0),) * pred.ndim if box is None else box
    return pred[box], gt[box]


def surface(mask: np.ndarray) -> np.ndarray:
    """``mask XOR erode(mask, connectivity-1 cross)`` with background outside the array (medpy's surface)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    centre = (slice(1, -1),) * mask.ndim
    for axis in range(mask.ndim):
        for shifted in (slice(0, -2), slice(2, None)):
            interior &= padded[centre[:axis] + (shifted,) + centre[axis + 1 :]]
    return mask & ~interior


def directed_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(d(P->G), d(G->P))`` for two non-empty boolean masks of one shape (no checks).

    Distances do not depend on where the masks sit, so callers pass them cropped by ``crop_to_union``.
    The KD-trees are unbalanced (sliding-midpoint splits): on lattice points that builds and queries
    1.3-2x faster than scipy's balanced default (measured on LA-sized surfaces), with the same exact
    nearest neighbours.
    """
    surface_pred, surface_gt = surface(pred), surface(gt)
    shared = np.count_nonzero(surface_pred & surface_gt)

    def points(mask: np.ndarray) -> np.ndarray:
        return np.argwhere(mask) * spacing

    tree_pred, tree_gt = (
        cKDTree(points(m), balanced_tree=False, compact_nodes=False) for m in (surface_pred, surface_gt)
    )
    pred_to_gt = tree_gt.query(points(surface_pred & ~surface_gt))[0]
    gt_to_pred = tree_pred.query(points(surface_gt & ~surface_pred))[0]
    zeros = np.zeros(shared)
    return np.concatenate([zeros, pred_to_gt]), np.concatenate([zeros, gt_to_pred])


def summarize_distances(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray, convention: str) -> tuple[float, float]:
    """``(hd95, asd)`` of the directed distances under ``convention`` (see the module docstring)."""
    pooled = np.concatenate([pred_to_gt, gt_to_pred])
    if convention == "monai":
        hd = max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95))
    else:
        hd = np.percentile(pooled, 95)
    mean = pooled.mean() if convention == "assd" else pred_to_gt.mean()
    return float(hd), float(mean)


def surface_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: np.ndarray,
    convention: str = "medpy",
    empty_penalty: float | None = None,
    image_shape: Sequence[int] | None = None,
) -> dict[str, float | bool]:
    """``hd95, asd, penalized`` of two checked boolean masks (whole images, or crops of the images of
    shape ``image_shape`` that hold every True voxel).

    Both empty: distances 0, not penalized. Exactly one empty: both distances equal ``empty_penalty``
    (None: the diagonal of the image in spacing units) and ``penalized`` is True.
    """
    image_shape = pred.shape if image_shape is None else image_shape
    pred, gt = crop_to_union(pred, gt)
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return {"hd95": 0.0, "asd": 0.0, "penalized": False}
    if pred_any != gt_any:
        penalty = image_diagonal(image_shape, spacing) if empty_penalty is None else float(empty_penalty)
        return {"hd95": penalty, "asd": penalty, "penalized": True}
    hd, mean = summarize_distances(*directed_distances(pred, gt, spacing), convention)
    return {"hd95": hd, "asd": mean, "penalized": False}


def _checked_metric(name: str, pred: object, gt: object, spacing: Sequence[float] | None, convention: str,
                    empty_penalty: float | None) -> float:
    """Metric ``name`` of :func:`surface_metrics` after checking every input (the public functions' common body)."""
    check_convention(convention)
    check_empty_penalty(empty_penalty)
    p, g = as_binary_mask(pred, "pred"), as_binary_mask(gt, "gt")
    check_same_shape(p, g)
    return float(surface_metrics(p, g, as_spacing(spacing, p.ndim), convention, empty_penalty)[name])


def hd95(pred: object, gt: object, spacing: Sequence[float] | None = None, *, convention: str = "medpy",
         empty_penalty: float | None = None) -> float:
    """95th-percentile Hausdorff distance of two binary 2D/3D masks, in spacing units.

    Default: ``P95(d(P->G) ++ d(G->P))`` as ``medpy.metric.binary.hd95``; ``convention="monai"`` takes the
    larger directed percentile. One mask empty: ``empty_penalty`` (None: image diagonal).
    """
    return _checked_metric("hd95", pred, gt, spacing, convention, empty_penalty)


def asd(pred: object, gt: object, spacing: Sequence[float] | None = None, *, convention: str = "medpy",
        empty_penalty: float | None = None) -> float:
    """Average surface distance of two binary 2D/3D masks, in spacing units.

    Default: ``mean(d(P->G))`` as ``medpy.metric.binary.asd(pred, gt)``; ``convention="assd"`` pools both
    directions. One mask empty: ``empty_penalty`` (None: image diagonal).
    """
    return _checked_metric("asd", pred, gt, spacing, convention, empty_penalty)
