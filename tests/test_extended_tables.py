"""Extended tables (every loss, rmseg.reporting.extended_tables) rebuilt from the fixture summaries under
tests/golden/runs/extended (hand-chosen per-case values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from rmseg.reporting.extended_tables import EXTENDED_GS, EXTENDED_LA
from rmseg.cli.tables import main
from rmseg.reporting.tables import build_table, render_markdown

GOLDEN = Path(__file__).parent / "golden"
RUNS = GOLDEN / "runs"

# per-case Dice of the fixture, cases g1..g3 (GS) / la01..la05 (LA), per seed
GS_DICE_CE = {
    "cup": {0: [0.78, 0.70, 0.86], 1: [0.80, 0.74, 0.84]},
    "disc": {0: [0.94, 0.92, 0.96], 1: [0.95, 0.93, 0.95]},
}
GS_RM = {"cup": {0: [0.82, 0.71, 0.90], 1: [0.84, 0.77, 0.86]}, "disc": {0: [0.94, 0.95, 0.98], 1: [0.93, 0.94, 0.99]}}
GS_REGION_WISE = {"cup": {1: [0.82, 0.73, 0.87]}, "disc": {1: [0.96, 0.95, 0.98]}}
LA_DICE_CE = [0.85, 0.80, 0.88, 0.78, 0.90]
LA_RM = [0.88, 0.84, 0.87, 0.83, 0.92]
LA_HD = [0.86, 0.77, 0.92, 0.80, 0.85]


def _cell(df, row, structure, metric):
    return df[(df.row == row) & (df.structure == structure) & (df.metric == metric)].iloc[0]


@pytest.mark.parametrize("spec", [EXTENDED_GS, EXTENDED_LA], ids=lambda s: s.name)
def test_extended_tables_match_golden_markdown(spec):
    df, notes = build_table(spec, RUNS)
    assert render_markdown(spec, df, notes) == (GOLDEN / f"{spec.name}.md").read_text()


def test_extended_gs_pooled_mean_std_by_hand():
    df, notes = build_table(EXTENDED_GS, RUNS)
    cup = np.array(GS_DICE_CE["cup"][0] + GS_DICE_CE["cup"][1])
    cell = _cell(df, "dice_ce", "cup", "dice")
    assert cell["mean"] == pytest.approx(100 * cup.mean()) and cell["std_cases"] == pytest.approx(100 * np.std(cup, ddof=0))
    assert (cell["n_cases"], cell["n_seeds"]) == (3, 2)
    # rm disc Dice: (0.94 + 0.95 + 0.98 + 0.93 + 0.94 + 0.99) / 6
    assert _cell(df, "rm", "disc", "dice")["mean"] == pytest.approx(95.5)
    # dice_ce cup 95HD: (7 + 9 + 5 + 6 + 8 + 6) / 6; region_wise cup 95HD of g2 is null: (6 + 5) / 2
    assert _cell(df, "dice_ce", "cup", "hd95")["mean"] == pytest.approx(41 / 6)
    assert _cell(df, "region_wise", "cup", "hd95")["mean"] == pytest.approx(5.5)
    assert "region_wise cup hd95: 1 case value(s) undefined, left out." in notes


def test_extended_gs_wilcoxon_per_structure_against_scipy():
    df, _ = build_table(EXTENDED_GS, RUNS)
    for structure, exact in (("cup", 0.25), ("disc", 0.5)):  # cup: 3 positive differences; disc: rank 1 negative
        rm = np.mean([GS_RM[structure][0], GS_RM[structure][1]], axis=0)
        base = np.mean([GS_DICE_CE[structure][0], GS_DICE_CE[structure][1]], axis=0)
        p = _cell(df, "rm", structure, "dice")["p_case"]
        assert p == pytest.approx(wilcoxon(rm, base).pvalue) and p == pytest.approx(exact)
    # region_wise has seed 1 only: paired with dice_ce seed 1 (+0.02, -0.01, +0.03), not with dice_ce's seed mean
    cell = _cell(df, "region_wise", "cup", "dice")
    assert cell["p_case"] == pytest.approx(wilcoxon(GS_REGION_WISE["cup"][1], GS_DICE_CE["cup"][1]).pvalue)
    assert cell["p_case"] == pytest.approx(0.5) and cell["n_pairs"] == 3
    base_mean = np.mean([GS_DICE_CE["cup"][0], GS_DICE_CE["cup"][1]], axis=0)
    assert wilcoxon(GS_REGION_WISE["cup"][1], base_mean).pvalue == pytest.approx(0.25)
    assert np.isnan(_cell(df, "dice_ce", "disc", "dice")["p_case"])


def test_extended_la_by_hand():
    df, notes = build_table(EXTENDED_LA, RUNS)
    cell = _cell(df, "hd", "atrium", "dice")
    assert cell["mean"] == pytest.approx(100 * np.mean(LA_HD)) and cell["std_cases"] == pytest.approx(100 * np.std(LA_HD))
    assert (cell["n_cases"], cell["n_seeds"]) == (5, 1)
    # rm - dice_ce: +0.03, +0.04, -0.01, +0.05, +0.02; the only negative difference has rank 1: p = 2 * 2 / 2**5
    rm = _cell(df, "rm", "atrium", "dice")
    assert rm["p_case"] == pytest.approx(wilcoxon(LA_RM, LA_DICE_CE).pvalue)
    assert rm["p_case"] == pytest.approx(0.125)
    # hd - dice_ce: +0.01, -0.03, +0.04, +0.02, -0.05: W+ = 7, W- = 8, the median of W's range: p = 1
    assert cell["p_case"] == pytest.approx(wilcoxon(LA_HD, LA_DICE_CE).pvalue)
    assert cell["p_case"] == pytest.approx(1.0)
    assert _cell(df, "rm", "atrium", "hd95")["mean"] == pytest.approx((8 + 10 + 7 + 11 + 5) / 5)
    assert not any("undefined" in n for n in notes)


def test_extended_missing_rows_and_no_published_column():
    for spec, present in ((EXTENDED_GS, {"dice_ce", "rm", "region_wise"}), (EXTENDED_LA, {"dice_ce", "rm", "hd"})):
        df, notes = build_table(spec, RUNS)
        assert set(df.loc[df["n_seeds"] > 0, "row"]) == present
        assert df.loc[~df.row.isin(present), "mean"].isna().all() and df["paper_mean"].isna().all()
        missing = [k for k, _ in spec.rows if k not in present]
        assert [n.split(":")[0] for n in notes if "no completed run" in n] == missing
        assert any(n.startswith("Published values: none") for n in notes)
        text = render_markdown(spec, df, notes)
        assert "| adaptive_region | rmseg | " + "— | " * (len(spec.metrics) + 3) + "missing |" in text
        assert "ΔDice vs dice_ce [95% CI]" in text and "| paper |" not in text


def test_cli_builds_extended_tables_from_fixture(tmp_path):
    assert main(["--runs", str(RUNS), "--out", str(tmp_path), "--table", "extended_gs", "--table", "extended_la"]) == 0
    for name in ("extended_gs", "extended_la"):
        assert (tmp_path / f"{name}.md").read_text() == (GOLDEN / f"{name}.md").read_text()
    assert r"region\_wise" in (tmp_path / "extended_gs.tex").read_text()
