"""Published numbers of Wang et al., "Residual Moment Loss for Medical Image Segmentation" (2021).

Source: arXiv:2106.14178 (https://arxiv.org/abs/2106.14178), Table 1 (Drishti-GS, optic cup and
disc) and Table 2 (LA 2018, 16 labelled training volumes).

Each entry is ``(dice, jaccard, hd95, asd)``; each of those a ``(mean, std)`` pair in the paper's
units (Dice and Jaccard in %, 95HD and ASD in pixels / voxels) or ``None`` where rmseg does not hold a
value read from the paper itself. Values are only ever entered by copying them from the paper's
tables; nothing here is estimated. At the time of writing no value had been transcribed, so every
entry is ``None`` and the tables print the published column as missing.
"""

from __future__ import annotations

Value = tuple[float, float | None] | None
Row = tuple[Value, Value, Value, Value]

SOURCE = "Wang et al., Residual Moment Loss for Medical Image Segmentation, arXiv:2106.14178 (2021)"
METRIC_ORDER = ("dice", "jaccard", "hd95", "asd")
_NONE: Row = (None, None, None, None)

PUBLISHED: dict[str, dict[str, dict[str, Row]]] = {
    "table1": {
        "unet": {"cup": _NONE, "disc": _NONE},
        "mse": {"cup": _NONE, "disc": _NONE},
        "rm10": {"cup": _NONE, "disc": _NONE},
        "rm10_01": {"cup": _NONE, "disc": _NONE},
        "rm20": {"cup": _NONE, "disc": _NONE},
        "rm20_02": {"cup": _NONE, "disc": _NONE},
        "rm20_02_22": {"cup": _NONE, "disc": _NONE},
    },
    "table2": {
        "vnet": {"atrium": _NONE},
        "boundary": {"atrium": _NONE},
        "hd": {"atrium": _NONE},
        "sdf": {"atrium": _NONE},
        "rm3": {"atrium": _NONE},
        "rm4": {"atrium": _NONE},
    },
}


def published(table: str | None, row: str, structure: str, metric: str) -> Value:
    """The paper's ``(mean, std)`` for one cell, or None when rmseg holds no published value."""
    if metric not in METRIC_ORDER:
        raise ValueError(f"metric {metric!r} is not one of {METRIC_ORDER}")
    if table is None:
        return None
    entry = PUBLISHED.get(table, {}).get(row, {}).get(structure)
    return None if entry is None else entry[METRIC_ORDER.index(metric)]
