"""Published numbers of Wang et al., "Residual Moment Loss for Medical Image Segmentation" (2021).

Source: arXiv:2106.14178v1 (https://arxiv.org/abs/2106.14178), Table 1 (Drishti-GS, optic cup and
disc, 2D U-Net) and Table 2 (LA 2018 left atrium, 3D V-Net, 16 labelled training volumes), transcribed
as printed. Each entry is ``(dice, jaccard, hd95, asd)``, each a ``(mean, std)`` pair: Dice and Jaccard
in %, 95HD and ASD as printed without a unit (Table 1: pixels of the 512 x 512 images; Table 2: voxels
of the UA-MT volumes, as Ma et al.'s medpy evaluation gives them). The paper does not say over what
its std is taken (test cases or repeated runs).

The boundary, HD and SDF rows of Table 2 were not run by Wang et al.: they are Ma et al.'s numbers
("How distance transform maps boost segmentation CNNs: an empirical study", MIDL 2020, code
JunMa11/SegWithDistMap), whose protocol Table 2 follows (:data:`ROW_SOURCE`). Nothing here is
estimated; a published value is shown beside a measurement, never in place of one.
"""

from __future__ import annotations

Value = tuple[float, float]
Row = tuple[Value, Value, Value, Value]

SOURCE = "Wang et al., Residual Moment Loss for Medical Image Segmentation, arXiv:2106.14178 (2021)"
MA_2020 = "Ma et al., How distance transform maps boost segmentation CNNs, MIDL 2020"
METRIC_ORDER = ("dice", "jaccard", "hd95", "asd")

#: The published cells, ``mean std`` per metric in :data:`METRIC_ORDER` (Dice and Jaccard in %, distances in
#: :data:`DISTANCE_UNIT`), as printed in the paper's Tables 1 and 2.
_PUBLISHED_TEXT = """
table1 unet       cup    80.9 3.50  69.1 4.66  13.9 1.93  6.80 1.16
table1 unet       disc   92.2 2.18  86.6 3.28  19.7 15.3  7.25 5.32
table1 mse        cup    81.3 2.67  69.5 3.46  15.9 2.40  7.42 0.78
table1 mse        disc   91.6 3.46  85.9 4.96  20.2 16.5  7.02 6.12
table1 rm10       cup    81.3 2.17  69.7 2.75  14.5 1.69  6.81 0.50
table1 rm10       disc   93.0 2.18  88.0 3.25  18.3 18.01 7.14 6.81
table1 rm10_01    cup    82.3 3.94  71.0 5.41  15.2 2.84  7.09 0.93
table1 rm10_01    disc   93.4 1.29  88.5 2.10  18.0 16.1  7.42 6.94
table1 rm20       cup    83.1 4.07  72.5 5.46  14.4 2.48  6.68 0.78
table1 rm20       disc   93.3 1.55  88.5 2.04  13.0 2.86  4.89 1.48
table1 rm20_02    cup    84.0 2.74  73.5 3.72  14.1 4.12  6.72 1.63
table1 rm20_02    disc   93.0 1.93  87.8 2.90  12.3 2.67  4.60 1.37
table1 rm20_02_22 cup    84.4 1.84  73.7 1.35  13.2 3.28  6.46 1.56
table1 rm20_02_22 disc   94.5 0.64  90.1 0.93  10.7 2.24  3.80 0.73
table2 vnet       atrium 85.4 0.69  75.2 1.00  26.0 6.28  7.44 1.81
table2 boundary   atrium 85.0 5.64  74.2 7.87  20.8 15.0  5.43 3.43
table2 hd         atrium 85.5 4.96  75.0 7.30  15.9 13.3  4.46 3.68
table2 sdf        atrium 84.2 8.48  73.5 11.0  13.5 11.2  3.24 3.10
table2 rm3        atrium 85.9 0.76  75.7 1.01  26.0 5.67  7.13 1.50
table2 rm4        atrium 86.5 0.51  76.6 0.75  21.4 3.30  6.16 1.01
"""


def _parse(text: str) -> dict[str, dict[str, dict[str, Row]]]:
    out: dict[str, dict[str, dict[str, Row]]] = {}
    for line in text.strip().splitlines():
        table, row, structure, *numbers = line.split()
        values = [float(v) for v in numbers]
        cells = tuple((values[k], values[k + 1]) for k in range(0, len(values), 2))
        out.setdefault(table, {}).setdefault(row, {})[structure] = cells  # type: ignore[assignment]
    return out


#: ``{table: {row: {structure: ((mean, std) per metric of METRIC_ORDER)}}}``.
PUBLISHED: dict[str, dict[str, dict[str, Row]]] = _parse(_PUBLISHED_TEXT)

#: Where each published row comes from (default: Wang et al.'s own runs).
ROW_SOURCE: dict[str, dict[str, str]] = {
    "table2": {row: f"copied by Wang et al. from {MA_2020}" for row in ("boundary", "hd", "sdf")},
}

#: Unit of the published distances per dataset (table headers), and the 2D grid it is a pixel of:
#: rmseg's distances are converted to it when a run is evaluated on another grid.
DISTANCE_UNIT = {"gs": "px of 512x512", "la": "voxels"}
PAPER_GRID = {"gs": (512, 512)}


def published(table: str | None, row: str, structure: str, metric: str) -> Value | None:
    """The paper's ``(mean, std)`` for one cell, or None when the paper has no such cell."""
    if metric not in METRIC_ORDER:
        raise ValueError(f"metric {metric!r} is not one of {METRIC_ORDER}")
    if table is None:
        return None
    entry = PUBLISHED.get(table, {}).get(row, {}).get(structure)
    return None if entry is None else entry[METRIC_ORDER.index(metric)]


def row_source(table: str | None, row: str) -> str:
    """Who ran a published row: Wang et al., or Ma et al. for the rows Wang et al. copied."""
    return ROW_SOURCE.get(table or "", {}).get(row, SOURCE)
