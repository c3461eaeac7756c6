"""The extended comparison's tables: every loss (CE+Dice, RM, boundary, HD, SDF, region-wise, adaptive
region-specific) on Drishti-GS and on LA, from the runs of ``configs/experiment/extended/``
(``make reproduce-extended``). Registered on import; ``rmseg-tables`` imports this module.

Same columns and statistics as Tables 1 and 2; the baseline of the Wilcoxon test is CE+Dice; there
is no published column (the paper has no such table).
"""

from __future__ import annotations

from rmseg.reporting.tables import TableSpec, register_table

EXTENDED_LOSSES = ("dice_ce", "rm", "boundary", "hd", "sdf", "region_wise", "adaptive_region")



def _extended(dataset: str, setting: str, structures: tuple[str, ...]) -> TableSpec:
    """The table of every loss of :data:`EXTENDED_LOSSES` on ``dataset`` (rows ``extended/<dataset>_<loss>``)."""
    return register_table(TableSpec(
        name=f"extended_{dataset}", title=f"Extended comparison on {setting}", dataset=dataset, baseline="dice_ce",
        rows=tuple((k, f"extended/{dataset}_{k}") for k in EXTENDED_LOSSES), structures=structures))


EXTENDED_GS = _extended("gs", "Drishti-GS: every loss under Table 1's protocol (2D U-Net)", ("cup", "disc"))
EXTENDED_LA = _extended("la", "LA 2018: every loss under Table 2's protocol (V-Net, 16 labelled volumes)", ("atrium",))
