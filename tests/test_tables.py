"""Tables rebuilt from the fixture summaries under tests/golden/runs (hand-written JSON)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from rmseg import paper_values
from rmseg.tables import TABLE1, TABLE2, TableSpec, build_table, main, register_table, render_markdown

GOLDEN = Path(__file__).parent / "golden"
RUNS = GOLDEN / "runs"


def _cell(df, row, structure, metric):
    return df[(df.row == row) & (df.structure == structure) & (df.metric == metric)].iloc[0]


def test_table1_matches_golden_markdown():
    df, notes = build_table(TABLE1, RUNS)
    assert render_markdown(TABLE1, df, notes) == (GOLDEN / "table1.md").read_text()


def test_pooled_mean_std_over_cases_and_seeds_by_hand():
    df, _ = build_table(TABLE1, RUNS)
    unet_cup = np.array([0.80, 0.70, 0.90, 0.82, 0.72, 0.88])  # seed0 then seed1, from the fixture files
    cell = _cell(df, "unet", "cup", "dice")
    assert cell["mean"] == pytest.approx(100 * unet_cup.mean())
    assert cell["std"] == pytest.approx(100 * unet_cup.std())
    assert (cell["n_cases"], cell["n_seeds"]) == (3, 2)
    # rm20 cup 95HD: seed0 case g2 is null (undefined) and is left out: (5 + 3 + 5 + 6 + 3) / 5
    assert _cell(df, "rm20", "cup", "hd95")["mean"] == pytest.approx(22 / 5)


def test_wilcoxon_against_scipy_on_fixture():
    df, _ = build_table(TABLE1, RUNS)
    # per-case cup Dice averaged over the common seeds 0 and 1, paired by case id g1, g2, g3
    rm20 = [(0.85 + 0.83) / 2, (0.75 + 0.77) / 2, (0.93 + 0.91) / 2]
    unet = [(0.80 + 0.82) / 2, (0.70 + 0.72) / 2, (0.90 + 0.88) / 2]
    cell = _cell(df, "rm20", "cup", "dice")
    assert cell["p_dice_vs_baseline"] == pytest.approx(wilcoxon(rm20, unet).pvalue)
    assert cell["p_dice_vs_baseline"] == pytest.approx(0.25)  # 3 positive differences: exact 2 / 2**3
    assert cell["n_pairs"] == 3
    assert np.isnan(_cell(df, "unet", "cup", "dice")["p_dice_vs_baseline"])


def test_table2_matches_golden_markdown():
    df, notes = build_table(TABLE2, RUNS)
    assert render_markdown(TABLE2, df, notes) == (GOLDEN / "table2.md").read_text()


# Table 2 fixture (tests/golden/runs/table2): atrium Dice of cases la01..la04 per seed
VNET = {0: [0.88, 0.84, 0.90, 0.80], 1: [0.86, 0.86, 0.88, 0.82]}
RM3 = {0: [0.90, 0.87, 0.87, 0.85], 1: [0.88, 0.89, 0.89, 0.85], 2: [0.91, 0.90, 0.95, 0.87]}
RM4 = {0: [0.874, 0.87, 0.946, 0.82]}


def test_table2_pooled_mean_std_by_hand():
    df, notes = build_table(TABLE2, RUNS)
    vnet = np.array(VNET[0] + VNET[1])
    cell = _cell(df, "vnet", "atrium", "dice")
    assert cell["mean"] == pytest.approx(100 * vnet.mean()) and cell["mean"] == pytest.approx(85.5)
    assert cell["std"] == pytest.approx(100 * np.std(vnet, ddof=0))  # ddof=0, as the caption says
    assert cell["std"] != pytest.approx(100 * np.std(vnet, ddof=1))
    assert f"| vnet | rmseg | {100 * vnet.mean():.2f} ({100 * vnet.std():.2f}) |" in (GOLDEN / "table2.md").read_text()
    rm3 = _cell(df, "rm3", "atrium", "dice")  # seed 2, which vnet lacks, still counts in mean (std)
    assert rm3["mean"] == pytest.approx(100 * np.mean(RM3[0] + RM3[1] + RM3[2]))
    assert (rm3["n_cases"], rm3["n_seeds"], rm3["seeds"]) == (4, 3, "0 1 2")
    # vnet 95HD: (8 + 10 + 6 + 14 + 9 + 9 + 7 + 13) / 8; rm4 95HD of la02 is null: (9 + 5 + 11) / 3
    assert _cell(df, "vnet", "atrium", "hd95")["mean"] == pytest.approx(9.5)
    assert _cell(df, "rm4", "atrium", "hd95")["mean"] == pytest.approx(25 / 3)
    assert "rm4 atrium hd95: 1 case value(s) undefined, left out." in notes


def test_table2_wilcoxon_over_common_seeds_against_scipy():
    df, _ = build_table(TABLE2, RUNS)
    vnet = np.mean([VNET[0], VNET[1]], axis=0)
    rm3 = np.mean([RM3[0], RM3[1]], axis=0)  # only the seeds vnet has too: seed 2 is left out
    cell = _cell(df, "rm3", "atrium", "dice")
    assert cell["p_dice_vs_baseline"] == pytest.approx(wilcoxon(rm3, vnet).pvalue)
    # differences +0.02, +0.03, -0.01, +0.04: the only negative one has rank 1, exact p = 2 * 2 / 2**4
    assert cell["p_dice_vs_baseline"] == pytest.approx(0.25) and cell["n_pairs"] == 4
    assert wilcoxon(np.mean(list(RM3.values()), axis=0), vnet).pvalue == pytest.approx(0.125)  # all 3 seeds differ
    # rm4 has seed 0 only, so it is paired with vnet seed 0 (not vnet's two-seed mean, which gives 0.125)
    rm4 = _cell(df, "rm4", "atrium", "dice")
    assert rm4["p_dice_vs_baseline"] == pytest.approx(wilcoxon(RM4[0], VNET[0]).pvalue)
    assert rm4["p_dice_vs_baseline"] == pytest.approx(0.25)
    assert wilcoxon(RM4[0], vnet).pvalue == pytest.approx(0.125)


def test_missing_runs_show_as_missing_never_as_numbers(tmp_path):
    df, notes = build_table(TABLE1, RUNS)
    mse = df[df.row == "mse"]
    assert mse["mean"].isna().all() and (mse["n_seeds"] == 0).all()
    assert any(n.startswith("mse: no completed run") for n in notes)  # the unfinished .seed0.tmp is ignored
    text = render_markdown(TABLE1, df, notes)
    assert "| mse | rmseg | — | — | — | — | — | missing |" in text
    df2, notes2 = build_table(TABLE2, RUNS)
    assert df2[df2.row.isin(["boundary", "hd", "sdf"])]["mean"].isna().all()
    assert "| hd | rmseg | — | — | — | — | — | missing |" in render_markdown(TABLE2, df2, notes2)
    empty, _ = build_table(TABLE2, tmp_path)  # no runs at all: every row missing, the baseline too
    assert empty["mean"].isna().all()
    assert "| vnet | rmseg | — | — | — | — | baseline | missing |" in render_markdown(TABLE2, empty, [])


def test_published_values_and_difference(monkeypatch):
    patched = {**paper_values.PUBLISHED, "table1": {**paper_values.PUBLISHED["table1"]}}
    patched["table1"]["unet"] = {"cup": ((80.0, 5.0), None, None, None), "disc": paper_values._NONE}
    monkeypatch.setattr(paper_values, "PUBLISHED", patched)
    df, notes = build_table(TABLE1, RUNS)
    cell = _cell(df, "unet", "cup", "dice")
    assert cell["difference"] == pytest.approx(100 * 0.80333333 - 80.0, abs=1e-5)
    assert "|  | paper | 80.00 (5.00) | — | — | — |  |  |" in render_markdown(TABLE1, df, notes)
    assert np.isnan(_cell(df, "rm20", "cup", "dice")["paper_mean"])


def test_every_published_value_is_none_or_a_number_pair():
    for table in paper_values.PUBLISHED.values():
        for row in table.values():
            for values in row.values():
                assert len(values) == 4
                for v in values:
                    assert v is None or (isinstance(v[0], float) and (v[1] is None or isinstance(v[1], float)))


def test_corrupt_or_mismatching_summary_is_an_error(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    bad = runs / "table1" / "rm20" / "seed0" / "summary.json"
    bad.write_text('{"experiment": "table1/rm20", "cases": [')
    with pytest.raises(ValueError, match="rm20/seed0/summary.json is not valid JSON"):
        build_table(TABLE1, runs)
    summary = json.loads((RUNS / "table1" / "rm20" / "seed0" / "summary.json").read_text())
    bad.write_text(json.dumps({**summary, "dataset": "la"}))
    with pytest.raises(ValueError, match="dataset 'la'"):
        build_table(TABLE1, runs)
    summary["cases"] = [c for c in summary["cases"] if not (c["id"] == "g2" and c["structure"] == "cup")]
    bad.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"\('g2', 'cup'\)"):
        build_table(TABLE1, runs)


def test_a_new_table_is_just_another_spec():
    spec = TableSpec(
        name="mini", title="Mini", dataset="gs", baseline="base",
        rows=(("base", "table1/unet"), ("moment", "table1/rm20")), structures=("disc",), metrics=("dice", "asd"),
    )
    df, notes = build_table(spec, RUNS)
    assert set(df.metric) == {"dice", "asd"} and set(df.structure) == {"disc"}
    assert _cell(df, "moment", "disc", "dice")["mean"] == pytest.approx(100 * np.mean([0.96, 0.95, 0.97, 0.97, 0.94, 0.98]))
    with pytest.raises(ValueError, match="already registered"):
        register_table(TABLE1)
    with pytest.raises(ValueError, match="baseline 'x'"):
        TableSpec(name="t", title="t", dataset="gs", baseline="x", rows=(("a", "a"),), structures=("cup",))


def test_cli_writes_markdown_csv_latex(tmp_path, capsys):
    assert main(["--runs", str(RUNS), "--out", str(tmp_path), "--table", "table1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table1.csv", "table1.md", "table1.tex"]
    csv = pd.read_csv(tmp_path / "table1.csv")
    assert len(csv) == 7 * 2 * 4
    tex = (tmp_path / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and "rm20\\_02\\_22" in tex and "—" not in tex
    assert "80.33 (7.43)" in capsys.readouterr().out
    assert main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2


def test_synthetic_runs_are_flagged(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    path = runs / "table1" / "rm20" / "seed1" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "source": "synthetic"}))
    _, notes = build_table(TABLE1, runs)
    assert "rm20: run on synthetic stand-in data; not comparable with published values." in notes
    assert not any("synthetic" in n for n in build_table(TABLE1, RUNS)[1])
