"""The extended comparison's tables: every loss (CE+Dice, RM, boundary, HD, SDF, region-wise, adaptive
region-specific) on Drishti-GS and on LA, from the runs of ``configs/experiment/extended/``
(``make reproduce-extended``). Registered on import; ``rmseg-tables`` imports this module.

Same columns and statistics as Tables 1 and 2; the baseline of the Wilcoxon test is CE+Dice; there
is no published column (the paper has no such table).
"""

from __future__ import annotations

from rmseg.reporting.tables import TableSpec, register_table

EXTENDED_LOSSES = ("dice_ce", "rm", "boundary", "hd", "sdf", "region_wise", "adaptive_region")

EXTENDED_GS = register_table(
    TableSpec(
        name="extended_gs",
        title="Extended comparison on Drishti-GS: every loss under Table 1's protocol (2D U-Net)",
        dataset="gs",
        baseline="dice_ce",
        rows=tuple((k, f"extended/gs_{k}") for k in EXTENDED_LOSSES),
        structures=("cup", "disc"),
    )
)
EXTENDED_LA = register_table(
    TableSpec(
        name="extended_la",
        title="Extended comparison on LA 2018: every loss under Table 2's protocol (V-Net, 16 labelled volumes)",
        dataset="la",
        baseline="dice_ce",
        rows=tuple((k, f"extended/la_{k}") for k in EXTENDED_LOSSES),
        structures=("atrium",),
    )
)
