"""Per-case metric rows: label maps against the test cases, one row per (case, structure).

Rows carry the keys of ``rmseg.metrics.evaluate_label_map`` (:data:`ROW_COLUMNS`);
``rmseg.evaluation.records`` pools them into ``summary.json`` and ``per_case.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from rmseg.evaluation.config import EvalConfig, eval_config
from rmseg.metrics import evaluate_cases
from rmseg.metrics._checks import check_same_shape

METRICS = ("dice", "jaccard", "hd95", "asd")
COUNTS = ("tp", "fp", "fn", "n_pred", "n_ref")
FLAGS = ("pred_empty", "ref_empty", "penalized")
ROW_COLUMNS = ("id", "structure", *METRICS, *COUNTS, *FLAGS)
#: How tables and reports name the metrics; Dice and Jaccard are shown in %.
METRIC_NAMES = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "95HD", "asd": "ASD"}
PERCENT = {"dice", "jaccard"}


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
    every case (None when they differ) in ``df.attrs["eval_grid"]``, for ``rmseg.evaluation.records.write_summary``.
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
