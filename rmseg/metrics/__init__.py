"""Segmentation metrics on binary masks and label maps (medpy 0.5.2 convention by default)."""

from rmseg.metrics.cases import METRIC_KEYS, evaluate_case, evaluate_cases, evaluate_label_map
from rmseg.metrics.overlap import dice, jaccard
from rmseg.metrics.surface import CONVENTIONS, asd, hd95

__all__ = [
    "CONVENTIONS",
    "METRIC_KEYS",
    "asd",
    "dice",
    "evaluate_case",
    "evaluate_cases",
    "evaluate_label_map",
    "hd95",
    "jaccard",
]
