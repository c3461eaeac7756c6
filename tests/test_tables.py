"""Tables rebuilt from the fixture summaries under tests/golden/runs (hand-written JSON) and from
summaries written by the tests; statistics checked on worked examples."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import ttest_rel, wilcoxon

from rmseg.cli.tables import main
from rmseg.evaluation.records import log_summary, summary_report
from rmseg.reporting import paper_values
from rmseg.reporting.tables import (
    TABLE1,
    TABLE2,
    TableSpec,
    build_table,
    dice_difference_ci,
    hierarchical_bootstrap,
    holm,
    register_table,
    render_markdown,
)

GOLDEN = Path(__file__).parent / "golden"
RUNS = GOLDEN / "runs"


def _cell(df, row, structure, metric):
    return df[(df.row == row) & (df.structure == structure) & (df.metric == metric)].iloc[0]


def _write_run(root, experiment, seed, dice, *, dataset="la", structure="atrium", source=None, config=None,
               hd95=None, empty=(), **extra):
    """A summary of one run: per-case Dice ``dice`` (cases c0, c1, ...), Jaccard d / (2 - d)."""
    folder = Path(root) / experiment / f"seed{seed}"
    folder.mkdir(parents=True)
    cases = [{"id": f"c{i}", "structure": structure, "dice": d, "jaccard": d / (2 - d),
              "hd95": 10.0 + i if hd95 is None else hd95[i], "asd": 2.0, "pred_empty": i in empty, "penalized": i in empty}
             for i, d in enumerate(dice)]
    summary = {"experiment": experiment, "seed": seed, "dataset": dataset, "structures": {structure: [1]},
               "cases": cases, **({"source": source} if source else {}), **extra}
    (folder / "summary.json").write_text(json.dumps(summary))
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


# ---------------------------------------------------------------- golden fixtures


@pytest.mark.parametrize("spec", [TABLE1, TABLE2], ids=lambda s: s.name)
def test_tables_match_golden_markdown(spec):
    df, notes = build_table(spec, RUNS)
    assert render_markdown(spec, df, notes) == (GOLDEN / f"{spec.name}.md").read_text()


def test_pooled_mean_std_over_cases_and_seeds_by_hand():
    df, _ = build_table(TABLE1, RUNS)
    unet_cup = np.array([0.80, 0.70, 0.90, 0.82, 0.72, 0.88])  # seed0 then seed1, from the fixture files
    cell = _cell(df, "unet", "cup", "dice")
    assert cell["mean"] == pytest.approx(100 * unet_cup.mean())
    assert cell["std_cases"] == pytest.approx(100 * unet_cup.std())
    assert (cell["n_cases"], cell["n_seeds"]) == (3, 2)
    assert np.isnan(cell["std_runs"])  # 2 seeds: no std over runs
    # rm20 cup 95HD: seed0 case g2 is null (undefined) and is left out: (5 + 3 + 5 + 6 + 3) / 5
    assert _cell(df, "rm20", "cup", "hd95")["mean"] == pytest.approx(22 / 5)


def test_wilcoxon_against_scipy_on_fixture():
    df, _ = build_table(TABLE1, RUNS)
    # per-case cup Dice averaged over the common seeds 0 and 1, paired by case id g1, g2, g3
    rm20 = [(0.85 + 0.83) / 2, (0.75 + 0.77) / 2, (0.93 + 0.91) / 2]
    unet = [(0.80 + 0.82) / 2, (0.70 + 0.72) / 2, (0.90 + 0.88) / 2]
    cell = _cell(df, "rm20", "cup", "dice")
    assert cell["p_case"] == pytest.approx(wilcoxon(rm20, unet).pvalue)
    assert cell["p_case"] == pytest.approx(0.25)  # 3 positive differences: exact 2 / 2**3
    assert cell["n_pairs"] == 3
    assert np.isnan(_cell(df, "unet", "cup", "dice")["p_case"])
    # Holm over the two tests of the table (rm20 cup, rm20 disc)
    disc = _cell(df, "rm20", "disc", "dice")["p_case"]
    assert cell["p_case_holm"] == pytest.approx(holm([cell["p_case"], disc])[0])
    # the Dice difference is the mean over common seeds and cases of rm20 - unet, in points
    assert cell["dice_diff"] == pytest.approx(100 * (np.mean(rm20) - np.mean(unet)))
    assert cell["dice_diff_low"] <= cell["dice_diff"] <= cell["dice_diff_high"]


# Table 2 fixture (tests/golden/runs/table2): atrium Dice of cases la01..la04 per seed
VNET = {0: [0.88, 0.84, 0.90, 0.80], 1: [0.86, 0.86, 0.88, 0.82]}
RM3 = {0: [0.90, 0.87, 0.87, 0.85], 1: [0.88, 0.89, 0.89, 0.85], 2: [0.91, 0.90, 0.95, 0.87]}
RM4 = {0: [0.874, 0.87, 0.946, 0.82]}


def test_table2_pooled_mean_std_and_std_over_runs_by_hand():
    df, notes = build_table(TABLE2, RUNS)
    vnet = np.array(VNET[0] + VNET[1])
    cell = _cell(df, "vnet", "atrium", "dice")
    assert cell["mean"] == pytest.approx(100 * vnet.mean()) and cell["mean"] == pytest.approx(85.5)
    assert cell["std_cases"] == pytest.approx(100 * np.std(vnet, ddof=0))  # ddof=0, as the legend says
    rm3 = _cell(df, "rm3", "atrium", "dice")  # seed 2, which vnet lacks, still counts in mean (std)
    assert rm3["mean"] == pytest.approx(100 * np.mean(RM3[0] + RM3[1] + RM3[2]))
    assert (rm3["n_cases"], rm3["n_seeds"], rm3["seeds"]) == (4, 3, "0 1 2")
    # seed means 0.8725, 0.8775, 0.9075: sample std (ddof=1) = 1.893 points
    assert rm3["std_runs"] == pytest.approx(100 * np.std([0.8725, 0.8775, 0.9075], ddof=1))
    assert rm3["std_runs"] == pytest.approx(1.893, abs=1e-3)
    text = (GOLDEN / "table2.md").read_text()
    assert f"| {100 * vnet.mean():.2f} ({100 * vnet.std():.2f}; —) |" in text
    assert f"{rm3['mean']:.2f} ({rm3['std_cases']:.2f}; 1.89)" in text
    # vnet 95HD: (8 + 10 + 6 + 14 + 9 + 9 + 7 + 13) / 8; rm4 95HD of la02 is null: (9 + 5 + 11) / 3
    assert _cell(df, "vnet", "atrium", "hd95")["mean"] == pytest.approx(9.5)
    assert _cell(df, "rm4", "atrium", "hd95")["mean"] == pytest.approx(25 / 3)
    assert "rm4 atrium hd95: 1 case value(s) undefined, left out." in notes


def test_table2_wilcoxon_over_common_seeds_and_one_seed_mark():
    df, notes = build_table(TABLE2, RUNS)
    vnet = np.mean([VNET[0], VNET[1]], axis=0)
    rm3 = np.mean([RM3[0], RM3[1]], axis=0)  # only the seeds vnet has too: seed 2 is left out
    cell = _cell(df, "rm3", "atrium", "dice")
    assert cell["p_case"] == pytest.approx(wilcoxon(rm3, vnet).pvalue)
    # differences +0.02, +0.03, -0.01, +0.04: the only negative one has rank 1, exact p = 2 * 2 / 2**4
    assert cell["p_case"] == pytest.approx(0.25) and cell["n_pairs"] == 4 and cell["n_seed_pairs"] == 2
    # rm4 has seed 0 only, so it is paired with vnet seed 0 (not vnet's two-seed mean, which gives 0.125)
    rm4 = _cell(df, "rm4", "atrium", "dice")
    assert rm4["p_case"] == pytest.approx(wilcoxon(RM4[0], VNET[0]).pvalue) and rm4["p_case"] == pytest.approx(0.25)
    assert rm4["n_seed_pairs"] == 1
    # Holm over rm3 and rm4: both 0.25 -> 0.5 each; rm4's cell says it ignores run-to-run variation
    assert cell["p_case_holm"] == pytest.approx(0.5) and rm4["p_case_holm"] == pytest.approx(0.5)
    text = render_markdown(TABLE2, df, notes)
    assert "| 0.5 (1 seed) | — |" in text and "| 0.5 | — |" in text
    assert np.isnan(cell["p_run"])  # 2 common seeds: no per-run test


def test_missing_runs_show_as_missing_never_as_numbers(tmp_path):
    df, notes = build_table(TABLE1, RUNS)
    mse = df[df.row == "mse"]
    assert mse["mean"].isna().all() and (mse["n_seeds"] == 0).all()
    assert any(n.startswith("mse: no completed run") for n in notes)  # the unfinished .seed0.tmp is ignored
    text = render_markdown(TABLE1, df, notes)
    assert "| mse | rmseg | — | — | — | — | — | — | — | missing |" in text
    assert "|  | paper | 81.30 (2.67) | 69.50 (3.46) | 15.90 (2.40) | 7.42 (0.78) |" in text  # shown, not used
    assert "|  | difference | — | — | — | — |" in text
    df2, notes2 = build_table(TABLE2, RUNS)
    assert df2[df2.row.isin(["boundary", "hd", "sdf"])]["mean"].isna().all()
    assert "| hd | rmseg | — | — | — | — | — | — | — | missing |" in render_markdown(TABLE2, df2, notes2)
    empty, _ = build_table(TABLE2, tmp_path)  # no runs at all: every row missing, the baseline too
    assert empty["mean"].isna().all()
    assert "| vnet | rmseg | — | — | — | — | baseline | baseline | baseline | missing |" in render_markdown(TABLE2, empty, [])


def test_published_values_difference_and_units_in_the_table():
    df, notes = build_table(TABLE2, RUNS)
    cell = _cell(df, "vnet", "atrium", "dice")
    assert (cell["paper_mean"], cell["paper_std"]) == (85.4, 0.69)
    assert cell["difference"] == pytest.approx(85.5 - 85.4)
    text = render_markdown(TABLE2, df, notes)
    assert "|  | paper | 85.40 (0.69) | 75.20 (1.00) | 26.00 (6.28) | 7.44 (1.81) |" in text
    assert "|  | difference | +0.10 | -0.40 | -16.50 | -4.94 |" in text
    assert "|  | paper (Ma et al.) | 85.50 (4.96) |" in text
    assert "95HD (voxels)" in text and "ASD (voxels)" in text
    assert "95HD (px of 512x512)" in render_markdown(TABLE1, *build_table(TABLE1, RUNS))
    assert any("boundary, hd, sdf: not run by Wang et al." in n and "Ma et al." in n for n in notes)


def test_a_new_table_is_just_another_spec():
    spec = TableSpec(
        name="mini", title="Mini", dataset="gs", baseline="base",
        rows=(("base", "table1/unet"), ("moment", "table1/rm20")), structures=("disc",), metrics=("dice", "asd"),
    )
    df, notes = build_table(spec, RUNS)
    assert set(df.metric) == {"dice", "asd"} and set(df.structure) == {"disc"}
    assert _cell(df, "moment", "disc", "dice")["mean"] == pytest.approx(100 * np.mean([0.96, 0.95, 0.97, 0.97, 0.94, 0.98]))
    assert any(n.startswith("Published values: none") for n in notes)
    with pytest.raises(ValueError, match="already registered"):
        register_table(TABLE1)
    with pytest.raises(ValueError, match="baseline 'x'"):
        TableSpec(name="t", title="t", dataset="gs", baseline="x", rows=(("a", "a"),), structures=("cup",))


def test_cli_writes_markdown_csv_latex(tmp_path, capsys):
    assert main(["--runs", str(RUNS), "--out", str(tmp_path), "--table", "table1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table1.csv", "table1.md", "table1.tex"]
    csv = pd.read_csv(tmp_path / "table1.csv")
    assert len(csv) == 7 * 2 * 4
    assert {"std_cases", "std_runs", "dice_diff_low", "dice_diff_high", "p_case_holm", "p_run_holm"} <= set(csv.columns)
    tex = (tmp_path / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and "rm20\\_02\\_22" in tex and "—" not in tex and r"$\Delta$Dice" in tex
    assert "80.33 (7.43; —)" in capsys.readouterr().out
    assert main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2


def test_cli_without_runs_builds_every_runs_root(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "results" / "runs"
    shutil.copytree(RUNS / "table2", runs / "cpu" / "table2")
    shutil.copytree(RUNS / "table2", runs / "cpu_long" / "table2")
    shutil.copytree(RUNS / "table2" / "rm3", runs / "check" / "table2" / "rm3")  # no baseline: not a table
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    tables = tmp_path / "results" / "tables"
    assert sorted(p.relative_to(tables).as_posix() for p in tables.rglob("*.md")) == ["cpu/table2.md", "cpu_long/table2.md"]
    assert (tables / "cpu" / "table2.md").read_text() == (GOLDEN / "table2.md").read_text()
    capsys.readouterr()
    shutil.rmtree(runs / "cpu")
    shutil.rmtree(runs / "cpu_long")
    assert main([]) == 2 and "no baseline runs" in capsys.readouterr().err


# ---------------------------------------------------------------- statistics: worked examples


def test_holm_on_three_p_values_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(1 * 0.04, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1
    out = holm([0.02, np.nan, 0.04])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]).size == 0


def test_bootstrap_of_a_constant_is_that_constant():
    d = np.full((3, 5), 1.5)
    assert dice_difference_ci(d, np.zeros_like(d)) == pytest.approx((1.5, 1.5, 1.5))


def test_bootstrap_interval_on_two_valued_cases_is_the_binomial_one():
    # one seed, cases (0, 0, 1, 1): a resample mean is K / 4 with K ~ Binomial(4, 1/2), so P(mean = 0) =
    # P(mean = 1) = 1/16. Both exceed 2.5%, so the 95% interval is exactly [0, 1]. Monte Carlo: the count of
    # zero means in 10,000 resamples is Binomial(10000, 1/16), mean 625, sd 24; it would have to fall below
    # 250 (15 sd) for the 2.5% quantile to move off 0 (likewise for 1).
    mean, low, high = dice_difference_ci(np.array([[0.0, 0.0, 1.0, 1.0]]), np.zeros((1, 4)))
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    samples = hierarchical_bootstrap(np.array([[0.0, 0.0, 1.0, 1.0]]))
    assert set(np.unique(samples)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert abs((samples == 0).sum() - 625) < 5 * 24


def test_hierarchical_bootstrap_moments_match_the_two_stage_formula():
    # seeds s with case values d[s]: a resample draws S seeds, then C cases within each. Its mean has
    # expectation mean(d) and variance (var(m_s) + mean(v_s) / C) / S, m_s and v_s each seed's mean and
    # (ddof=0) variance. Tolerances: the Monte Carlo standard errors of the sample mean and variance of
    # the B resamples (from their own second and fourth moments), times 5.
    d = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 4.0, 6.0, 6.0]])
    s, c = d.shape
    expected_var = (np.var(d.mean(axis=1)) + np.mean(np.var(d, axis=1)) / c) / s
    samples = hierarchical_bootstrap(d, n=10_000, seed=1)
    b = samples.size
    assert abs(samples.mean() - d.mean()) < 5 * np.sqrt(expected_var / b)
    centred = samples - samples.mean()
    var_se = np.sqrt((np.mean(centred**4) - np.var(samples) ** 2) / b)
    assert abs(np.var(samples) - expected_var) < 5 * var_se
    # by hand: seed means 1.5 and 5 (variance 1.75**2), case variances 1.25 and 1 (mean 1.125). The seed
    # level matters: resampling cases alone (seeds kept) would give mean(v_s) / (C S) = 0.140625 only
    assert expected_var == pytest.approx((1.75**2 + 1.125 / 4) / 2)
    assert np.var(samples) > 3 * np.mean(np.var(d, axis=1)) / (c * s)
    assert np.array_equal(samples, hierarchical_bootstrap(d, n=10_000, seed=1))  # seeded
    with pytest.raises(ValueError, match="shape"):
        hierarchical_bootstrap(np.zeros((0, 3)))


def test_per_run_test_with_three_seeds_and_holm_across_rows(tmp_path):
    base = {0: [0.80, 0.70, 0.90], 1: [0.82, 0.74, 0.86], 2: [0.78, 0.72, 0.88]}
    rm3 = {0: [0.84, 0.73, 0.91], 1: [0.83, 0.78, 0.90], 2: [0.80, 0.74, 0.93]}
    rm4 = {0: [0.81, 0.70, 0.91], 1: [0.80, 0.75, 0.88]}
    for row, values in (("vnet", base), ("rm3", rm3), ("rm4", rm4)):
        for seed, dice in values.items():
            _write_run(tmp_path, f"table2/{row}", seed, dice)
    df, notes = build_table(TABLE2, tmp_path)
    cell = _cell(df, "rm3", "atrium", "dice")
    seed_means = [np.mean(rm3[s]) for s in range(3)], [np.mean(base[s]) for s in range(3)]
    assert cell["p_run"] == pytest.approx(ttest_rel(*seed_means).pvalue) and cell["n_seed_pairs"] == 3
    assert np.isnan(_cell(df, "rm4", "atrium", "dice")["p_run"])  # 2 common seeds
    p_case = [_cell(df, r, "atrium", "dice")["p_case"] for r in ("rm3", "rm4")]
    assert [_cell(df, r, "atrium", "dice")["p_case_holm"] for r in ("rm3", "rm4")] == pytest.approx(holm(p_case))
    assert cell["p_run_holm"] == pytest.approx(cell["p_run"])  # the only per-run test of the table
    assert cell["std_runs"] == pytest.approx(100 * np.std(seed_means[0], ddof=1))
    text = render_markdown(TABLE2, df, notes)
    assert f"| {cell['p_case_holm']:.3g} | {cell['p_run_holm']:.3g} | 3 x 3 |" in text


# ---------------------------------------------------------------- refusals


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


def test_seed_folder_without_summary_is_refused(tmp_path):
    _write_run(tmp_path, "table2/vnet", 0, [0.8, 0.9])
    (tmp_path / "table2" / "vnet" / "seed1").mkdir()
    with pytest.raises(ValueError, match=r"vnet/seed1 is a run folder without summary.json: evaluate it \(rmseg-eval"):
        build_table(TABLE2, tmp_path)


def test_summary_of_another_experiment_or_seed_is_refused(tmp_path):
    folder = _write_run(tmp_path, "table2/vnet", 0, [0.8, 0.9])
    folder.rename(tmp_path / "table2" / "vnet" / "seed3")
    with pytest.raises(ValueError, match=r"seed3/summary.json: the summary is of experiment 'table2/vnet' seed 0.*move"):
        build_table(TABLE2, tmp_path)
    shutil.rmtree(tmp_path / "table2")
    _write_run(tmp_path, "table2/rm3", 0, [0.8, 0.9])
    (tmp_path / "table2" / "rm3").rename(tmp_path / "table2" / "rm4")
    with pytest.raises(ValueError, match=r"rm4/seed0/summary.json: the summary is of experiment 'table2/rm3'"):
        build_table(TABLE2, tmp_path)


def test_fewer_cases_than_the_test_split_is_refused(tmp_path):
    _write_run(tmp_path, "table2/vnet", 0, [0.8] * 19, source="real")
    with pytest.raises(ValueError, match=r"19 test cases, but the la test split has 20: evaluate the run on the whole"):
        build_table(TABLE2, tmp_path)
    shutil.rmtree(tmp_path / "table2")
    _write_run(tmp_path, "table2/vnet", 0, [0.8] * 20, source="real")
    assert build_table(TABLE2, tmp_path)[0]["n_cases"].max() == 20
    shutil.rmtree(tmp_path / "table2")  # synthetic: the split size is the run config's
    _write_run(tmp_path, "table2/vnet", 0, [0.8] * 3, source="synthetic", config={"data": {"synthetic": {"num_test": 4}}})
    with pytest.raises(ValueError, match="3 test cases, but the la test split has 4"):
        build_table(TABLE2, tmp_path)


@pytest.mark.parametrize("metric, value, message", [
    ("dice", 1.2, r"c1, atrium\) dice = 1.2, outside \[0, 1\] \(0-100 %\)"),
    ("jaccard", -0.1, r"jaccard = -0.1, outside \[0, 1\]"),
    ("hd95", -3.0, "hd95 = -3.0 is negative"),
    ("asd", -0.5, "asd = -0.5 is negative"),
])
def test_out_of_range_metrics_are_refused(tmp_path, metric, value, message):
    folder = _write_run(tmp_path, "table2/vnet", 0, [0.8, 0.9])
    summary = json.loads((folder / "summary.json").read_text())
    summary["cases"][1][metric] = value
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=message):
        build_table(TABLE2, tmp_path)


def test_runs_of_one_row_with_different_configs_are_refused(tmp_path):
    config = {"seed": 0, "optim": {"lr": 0.01}, "trainer": {"num_threads": 1}, "paths": {"runs_dir": "a"}}
    _write_run(tmp_path, "table2/vnet", 0, [0.8, 0.9], config=config)
    # the seed, thread count and folder may differ: the same row
    _write_run(tmp_path, "table2/vnet", 1, [0.8, 0.9], config={**config, "seed": 1, "trainer": {"num_threads": 2},
                                                               "paths": {"runs_dir": "b"}})
    assert build_table(TABLE2, tmp_path)[0]["n_seeds"].max() == 2
    _write_run(tmp_path, "table2/vnet", 2, [0.8, 0.9], config={**config, "seed": 2, "optim": {"lr": 0.001}})
    with pytest.raises(ValueError, match=r"runs of table2/vnet differ .* \(seed0 vs seed2: optim.lr: 0.01 vs 0.001\)"):
        build_table(TABLE2, tmp_path)


# ---------------------------------------------------------------- flags and units


def test_mostly_empty_predictions_are_flagged(tmp_path):
    _write_run(tmp_path, "table2/vnet", 0, [0.8, 0.9, 0.85, 0.7], empty=(3,))  # 1 of 4: noted, not marked
    _write_run(tmp_path, "table2/rm3", 0, [0.0, 0.0, 0.85, 0.7], empty=(0, 1))  # 2 of 4: marked
    df, notes = build_table(TABLE2, tmp_path)
    text = render_markdown(TABLE2, df, notes)
    assert "| rm3 † | rmseg |" in text and "| vnet | rmseg |" in text
    assert ("† rm3 atrium: prediction empty in 2 of 4 (seed 0) test cases; their 95HD and ASD (2 case(s)) are the "
            "penalty for one empty mask, the image diagonal.") in notes
    assert any(n.startswith("vnet atrium: prediction empty in 1 of 4 (seed 0) test cases;") for n in notes)


def test_distances_are_converted_to_the_papers_unit(tmp_path):
    config = {"data": {"image_size": [128, 128]}}
    _write_run(tmp_path, "table1/unet", 0, [0.8, 0.9], dataset="gs", structure="cup", config=config, hd95=[2.0, 4.0])
    # an explicit scale in the summary wins over the config; an eval grid at the paper's 512 x 512 needs none
    _write_run(tmp_path, "table1/rm20", 0, [0.8, 0.9], dataset="gs", structure="cup", config=config, hd95=[2.0, 4.0],
               distance_unit_scale=2.0)
    _write_run(tmp_path, "table1/mse", 0, [0.8, 0.9], dataset="gs", structure="cup", config=config, hd95=[2.0, 4.0],
               eval_grid=[512, 512])
    spec = TableSpec(name="units", title="u", dataset="gs", baseline="unet", structures=("cup",),
                     rows=(("unet", "table1/unet"), ("rm20", "table1/rm20"), ("mse", "table1/mse")), paper="table1")
    df, notes = build_table(spec, tmp_path)
    assert _cell(df, "unet", "cup", "hd95")["mean"] == pytest.approx(4 * 3.0)  # 512 / 128
    assert _cell(df, "rm20", "cup", "hd95")["mean"] == pytest.approx(2 * 3.0)
    assert _cell(df, "mse", "cup", "hd95")["mean"] == pytest.approx(3.0)
    assert _cell(df, "unet", "cup", "dice")["mean"] == pytest.approx(85.0)  # overlaps are never scaled
    assert _cell(df, "unet", "cup", "hd95")["difference"] == pytest.approx(12.0 - 13.9)
    assert "Distances converted to the paper's unit (runs evaluated on another grid than the paper's): " \
           "unet x 4; rm20 x 2." in notes
    (tmp_path / "table1" / "mse" / "seed0" / "config.yaml").unlink()
    (tmp_path / "table1" / "unet" / "seed0" / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": [128, 64]}}))
    with pytest.raises(ValueError, match=r"evaluation grid \[128, 64\] is not an isotropic scaling"):
        build_table(spec, tmp_path)


def test_unknown_distance_unit_and_synthetic_data_are_flagged(tmp_path):
    _write_run(tmp_path, "table1/unet", 0, [0.8, 0.9], dataset="gs", structure="cup")  # no grid, no config
    _write_run(tmp_path, "table1/rm20", 0, [0.8, 0.9], dataset="gs", structure="cup", source="synthetic",
               eval_grid=[512, 512])
    spec = TableSpec(name="u", title="u", dataset="gs", baseline="unet", structures=("cup",),
                     rows=(("unet", "table1/unet"), ("rm20", "table1/rm20")))
    df, notes = build_table(spec, tmp_path)
    text = render_markdown(spec, df, notes)
    assert "| unet § | rmseg |" in text and "| rm20 * | rmseg |" in text
    assert any(n.startswith("§ unet: evaluation grid unknown") for n in notes)
    assert "* rm20: run on synthetic stand-in data; not comparable with published values." in notes
    assert not any("synthetic" in n for n in build_table(TABLE1, RUNS)[1])


# ---------------------------------------------------------------- end of a run


def test_summary_report_gives_means_per_structure_and_warns_on_empty_predictions(tmp_path, caplog):
    folder = _write_run(tmp_path, "table2/rm3", 0, [0.0, 0.0, 0.9, 0.7], empty=(0, 1), hd95=[1.0, 2.0, 3.0, 6.0])
    lines = summary_report(json.loads((folder / "summary.json").read_text()))
    assert lines[0] == (logging.INFO, "test set: table2/rm3 seed 0, 4 cases, mean over cases (Dice and Jaccard in %, "
                                      "95HD and ASD in pixels/voxels as evaluated)")
    level, line = lines[1]
    assert level == logging.INFO and line.split() == ["atrium", "Dice", "40.00", "Jaccard",
                                                      f"{100 * np.mean([0, 0, 0.9 / 1.1, 0.7 / 1.3]):.2f}",
                                                      "95HD", "3.00", "ASD", "2.00"]
    assert lines[2] == (logging.WARNING, "atrium: the prediction is empty in 2 of 4 test cases; "
                                         "the model has (almost) not learnt this structure")
    with caplog.at_level(logging.INFO):
        log_summary(folder / "summary.json", logging.getLogger("rmseg.test"))
    assert "Dice   40.00" in caplog.text and "empty in 2 of 4" in caplog.text
