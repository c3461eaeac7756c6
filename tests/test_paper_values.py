"""The published values held in rmseg.reporting.paper_values against the transcription in ../shared/paper."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rmseg.reporting import paper_values
from rmseg.reporting.tables import TABLE1, TABLE2

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper"
COLUMNS = [("dice_pct", "dice_std"), ("jaccard_pct", "jaccard_std"), ("hd95", "hd95_std"), ("asd", "asd_std")]


@pytest.mark.skipif(not (PAPER / "table1.csv").is_file(), reason=f"no published tables at {PAPER}")
@pytest.mark.parametrize("table", ["table1", "table2"])
def test_every_published_value_matches_the_transcribed_csv(table):
    csv = pd.read_csv(PAPER / f"{table}.csv")
    held = paper_values.PUBLISHED[table]
    assert {(r.row, r.structure) for r in csv.itertuples()} == {(row, s) for row in held for s in held[row]}
    for r in csv.itertuples():
        # the same decimal literals on both sides parse to the same floats: compared exactly
        expected = tuple((float(getattr(r, m)), float(getattr(r, s))) for m, s in COLUMNS)
        assert held[r.row][r.structure] == expected, (table, r.row, r.structure)
        if "source" in csv.columns:
            assert ("Ma et al." in paper_values.row_source(table, r.row)) == ("Ma et al." in r.source), r.row


def test_every_table_row_has_its_published_values():
    for spec in (TABLE1, TABLE2):
        for row, _ in spec.rows:
            for structure in spec.structures:
                for metric in paper_values.METRIC_ORDER:
                    mean, std = paper_values.published(spec.paper, row, structure, metric)
                    assert mean > 0 and std > 0
    assert len([s for rows in paper_values.PUBLISHED.values() for r in rows.values() for s in r]) == 2 * 7 + 6
    assert paper_values.published(None, "unet", "cup", "dice") is None
    assert "Ma et al." in paper_values.row_source("table2", "hd")
    assert paper_values.row_source("table2", "rm4") == paper_values.SOURCE
    with pytest.raises(ValueError, match="metric 'hd'"):
        paper_values.published("table1", "unet", "cup", "hd")
