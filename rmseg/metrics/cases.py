"""Per-case evaluation: one binary pair, one label map with several structures, many cases in parallel."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from rmseg.metrics._checks import as_binary_mask, as_label_map, as_spacing, check_same_shape
from rmseg.metrics.overlap import confusion_counts, dice_from_counts, jaccard_from_counts
from rmseg.metrics.surface import check_convention, check_empty_penalty, crop_to_union, surface_metrics, union_box

METRIC_KEYS = (
    "dice", "jaccard", "hd95", "asd", "tp", "fp", "fn", "n_pred", "n_ref", "pred_empty", "ref_empty", "penalized",
)
BINARY = "mask"  # structure name of binary masks in evaluate_cases


def _evaluate_masks(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: np.ndarray,
    convention: str,
    empty_penalty: float | None,
    image_shape: Sequence[int],
) -> dict[str, float | int | bool]:
    """Every metric of two boolean masks, or of crops of them holding all their True voxels."""
    pred, gt = crop_to_union(pred, gt)
    counts = confusion_counts(pred, gt)
    distances = surface_metrics(pred, gt, spacing, convention, empty_penalty, image_shape)
    return {
        "dice": dice_from_counts(counts["tp"], counts["n_pred"], counts["n_ref"]),
        "jaccard": jaccard_from_counts(counts["tp"], counts["n_pred"], counts["n_ref"]),
        "hd95": distances["hd95"],
        "asd": distances["asd"],
        **counts,
        "pred_empty": counts["n_pred"] == 0,
        "ref_empty": counts["n_ref"] == 0,
        "penalized": distances["penalized"],
    }


def evaluate_case(
    pred: object,
    gt: object,
    spacing: Sequence[float] | None = None,
    convention: str = "medpy",
    empty_penalty: float | None = None,
) -> dict[str, float | int | bool]:
    """All metrics of one binary 2D/3D prediction against its reference.

    Returns ``dice, jaccard, hd95, asd`` (distances in spacing units, see ``rmseg.metrics.surface`` for
    the conventions), voxel counts ``tp, fp, fn, n_pred, n_ref``, and flags ``pred_empty, ref_empty,
    penalized`` (True when exactly one mask is empty and the distances are ``empty_penalty``, by default
    the image diagonal). Both empty: Dice = Jaccard = 1, distances 0.
    """
    check_convention(convention)
    check_empty_penalty(empty_penalty)
    p, g = as_binary_mask(pred, "pred"), as_binary_mask(gt, "gt")
    check_same_shape(p, g)
    return _evaluate_masks(p, g, as_spacing(spacing, p.ndim), convention, empty_penalty, p.shape)


def _check_structures(structures: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    if not isinstance(structures, Mapping) or not structures:
        raise ValueError(
            f"structures {structures!r} must be a non-empty mapping name -> label ids, e.g. {{'disc': [1, 2]}}"
        )
    checked = {}
    for name, ids in structures.items():
        ids = [ids] if isinstance(ids, (int, np.integer)) else list(ids)
        if not ids or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"structure {name!r} has label ids {ids!r}; give a non-empty list of integer labels")
        checked[str(name)] = [int(i) for i in ids]
    return checked


def _crop_label_maps(
    pred: np.ndarray, gt: np.ndarray, structures: dict[str, list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Both label maps cropped to the bounding box of their non-zero labels, which holds every voxel of
    the evaluated structures (uncropped when a structure includes label 0, the background)."""
    if any(0 in ids for ids in structures.values()):
        return pred, gt
    box = union_box(pred, gt)
    box = (slice(0, 0),) * pred.ndim if box is None else box
    return pred[box], gt[box]


def _evaluate_cropped_label_maps(
    pred: np.ndarray,
    gt: np.ndarray,
    structures: dict[str, list[int]],
    spacing: np.ndarray,
    convention: str,
    empty_penalty: float | None,
    image_shape: Sequence[int],
) -> dict[str, dict[str, float | int | bool]]:
    return {
        name: _evaluate_masks(np.isin(pred, ids), np.isin(gt, ids), spacing, convention, empty_penalty, image_shape)
        for name, ids in structures.items()
    }


def evaluate_label_map(
    pred: object,
    gt: object,
    structures: Mapping[str, Sequence[int]],
    spacing: Sequence[float] | None = None,
    convention: str = "medpy",
    empty_penalty: float | None = None,
) -> dict[str, dict[str, float | int | bool]]:
    """``evaluate_case`` per structure of two integer label maps; a structure is the union of its label ids.

    ``structures`` maps names to label ids, e.g. ``{"disc": [1, 2], "cup": [2]}``; returns ``{name: metrics}``.
    """
    check_convention(convention)
    check_empty_penalty(empty_penalty)
    checked = _check_structures(structures)
    p, g = as_label_map(pred, "pred"), as_label_map(gt, "gt")
    check_same_shape(p, g)
    s = as_spacing(spacing, p.ndim)
    cropped_pred, cropped_gt = _crop_label_maps(p, g, checked)
    return _evaluate_cropped_label_maps(cropped_pred, cropped_gt, checked, s, convention, empty_penalty, p.shape)


def _prepared_cases(cases: Iterable[tuple], structures: dict[str, list[int]] | None) -> Iterator[tuple]:
    """Checked ``(id, pred, gt, spacing, image_shape)`` with the arrays cropped to what is evaluated,
    so that little data travels to worker processes."""
    for index, case in enumerate(cases):
        if not isinstance(case, tuple) or len(case) not in (2, 3, 4):
            raise ValueError(
                f"case {index} must be a tuple (pred, gt), (id, pred, gt) or (id, pred, gt, spacing), "
                f"got {type(case).__name__}"
                + (f" of length {len(case)}" if isinstance(case, tuple) else "")
            )
        if len(case) == 2:
            (pred, gt), case_id, spacing = case, str(index), None
        elif len(case) == 3:
            (case_id, pred, gt), spacing = case, None
        else:
            case_id, pred, gt, spacing = case
        if structures is None:
            p, g = as_binary_mask(pred, f"pred of case {case_id!r}"), as_binary_mask(gt, f"gt of case {case_id!r}")
            check_same_shape(p, g)
            cropped = crop_to_union(p, g)
        else:
            p, g = as_label_map(pred, f"pred of case {case_id!r}"), as_label_map(gt, f"gt of case {case_id!r}")
            check_same_shape(p, g)
            cropped = _crop_label_maps(p, g, structures)
        yield (case_id, *cropped, as_spacing(spacing, p.ndim), p.shape)


def _case_rows(
    case: tuple, structures: dict[str, list[int]] | None, convention: str, empty_penalty: float | None
) -> list[dict]:
    case_id, pred, gt, spacing, image_shape = case
    if structures is None:
        per_structure = {BINARY: _evaluate_masks(pred, gt, spacing, convention, empty_penalty, image_shape)}
    else:
        per_structure = _evaluate_cropped_label_maps(
            pred, gt, structures, spacing, convention, empty_penalty, image_shape
        )
    return [{"id": case_id, "structure": name, **metrics} for name, metrics in per_structure.items()]


def evaluate_cases(
    cases: Iterable[tuple],
    structures: Mapping[str, Sequence[int]] | None = None,
    *,
    workers: int | None = 1,
    convention: str = "medpy",
    empty_penalty: float | None = None,
) -> list[dict]:
    """Evaluate many cases, spreading them over ``workers`` processes; rows come back in input order.

    ``cases`` yields ``(pred, gt)``, ``(id, pred, gt)`` or ``(id, pred, gt, spacing)`` (a missing id is the
    case's position). With ``structures`` the arrays are label maps (see ``evaluate_label_map``), without
    they are binary masks reported as structure ``"mask"``. Returns one row per case and structure:
    ``{"id", "structure", dice, jaccard, hd95, asd, tp, fp, fn, n_pred, n_ref, pred_empty, ref_empty,
    penalized}``. ``workers=None`` uses every CPU core; ``1`` runs in this process. This process checks
    each case and crops it to the evaluated structures' bounding box before handing it to a worker; at
    most ``2 * workers`` cases are in flight, so a lazy iterable keeps memory bounded.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers {workers!r} must be a positive integer (or None for every CPU core)")
    check_convention(convention)
    check_empty_penalty(empty_penalty)
    checked = None if structures is None else _check_structures(structures)
    prepared = _prepared_cases(cases, checked)
    if workers == 1:
        return [row for case in prepared for row in _case_rows(case, checked, convention, empty_penalty)]
    rows: list[dict] = []
    pending: deque[Future] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for case in prepared:
            pending.append(pool.submit(_case_rows, case, checked, convention, empty_penalty))
            if len(pending) >= 2 * workers:
                rows.extend(pending.popleft().result())
        while pending:
            rows.extend(pending.popleft().result())
    return rows
