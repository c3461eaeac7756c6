"""The RM weight sweep: run folders from Hydra's multirun (as make sweep-alpha), then the figure and table."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from rmseg.cli import alpha_sweep as alpha_sweep_cli
from rmseg.reporting import alpha_sweep
from rmseg.reporting.tables import TABLE1

from conftest import tol

TINY_GS = ["data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]", "data.synthetic.num_train=4",
           "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]", "model.strides=[2,2]",
           "trainer=demo", "trainer.max_iters=3", "trainer.log_every=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    common = [sys.executable, "-m", "rmseg.cli.train", "-m", "seed=0", *TINY_GS, f"paths.results_dir={root / 'results'}",
              f"paths.data_dir={root / 'data'}", f"hydra.sweep.dir={root / 'multirun'}"]
    # the two commands of make sweep-alpha (ROW=table1/rm20, ALPHAS=10,100), and the table's row at its alpha 1
    for args in (["experiment=table1/rm20", "name=alpha_sweep/table1/rm20/alpha${loss.alpha}", "loss.alpha=10,100"],
                 ["experiment=table1/unet,table1/rm20"]):
        subprocess.run([*common, *args], check=True, capture_output=True, text=True)
    return root / "results" / "runs"


def test_sweep_points_are_run_folders_and_their_numbers_come_from_them(sweep):
    # the table's own rm20 runs (alpha 1, otherwise the same config) are the sweep's point at 1
    assert alpha_sweep.sweep_points(sweep, "table1/rm20") == {1.0: "table1/rm20",
                                                              10.0: "alpha_sweep/table1/rm20/alpha10",
                                                              100.0: "alpha_sweep/table1/rm20/alpha100"}
    folders = {1: sweep / "table1" / "rm20", 10: sweep / "alpha_sweep" / "table1" / "rm20" / "alpha10"}
    curves = {a: pd.read_csv(folder / "seed0" / "curve.csv") for a, folder in folders.items()}
    # same weights and batch at iteration 1: the RM gradient is linear in alpha, CE + Dice's does not move
    first = {a: c.iloc[0] for a, c in curves.items()}
    # float32 norms over the logits' gradient, 2 x 3 x 32 x 32 entries (pairwise sums of squares), each
    # entry of the RM gradient rounded once more when scaled by alpha
    bound = tol(torch.float32, 2 * 3 * 32 * 32, summation="pairwise")
    assert first[10]["grad_ce_dice"] == pytest.approx(first[1]["grad_ce_dice"], rel=bound)
    assert first[10][alpha_sweep.SHARE] == pytest.approx(10 * first[1][alpha_sweep.SHARE], rel=bound)

    df = alpha_sweep.collect(sweep, TABLE1)
    point = df[(df["row"] == "rm20") & (df["alpha"] == 10) & (df["structure"] == "disc") & (df["metric"] == "dice")].iloc[0]
    per_case = pd.read_csv(sweep / "alpha_sweep" / "table1" / "rm20" / "alpha10" / "seed0" / "per_case.csv")
    base = pd.read_csv(sweep / "table1" / "unet" / "seed0" / "per_case.csv")
    disc, base_disc = (t[t["structure"] == "disc"].set_index("id")["dice"] for t in (per_case, base))
    assert point["mean"] == pytest.approx(100 * disc.mean())
    assert point["low"] <= point["mean"] <= point["high"]
    assert point["delta"] == pytest.approx(100 * (disc - base_disc).mean())
    assert point["share"] == pytest.approx(curves[10][alpha_sweep.SHARE].mean())
    assert point["alpha_sum"] == pytest.approx(10 / (32 * 32))  # the sum of Eq. 4 with alpha / pixels


def test_main_writes_the_figure_and_table(sweep, tmp_path):
    argv = ["--runs", str(sweep), "--table", "table1", "--figures", str(tmp_path / "fig"), "--tables", str(tmp_path / "tab")]
    assert alpha_sweep_cli.main(argv) == 0
    assert (tmp_path / "fig" / "alpha_table1.png").stat().st_size > 0
    text = (tmp_path / "tab" / "alpha_table1.md").read_text()
    assert "| unet | — |" in text and "| rm20 | 10 |" in text and "| rm20 | 1 |" in text
    assert alpha_sweep_cli.main(["--runs", str(tmp_path), "--table", "table1"]) == 2


def test_the_table_row_is_no_point_when_its_training_differs(sweep, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(sweep, root)
    config = root / "table1" / "rm20" / "seed0" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 0.002", 1))
    assert "lr: 0.002" in config.read_text()
    assert alpha_sweep.sweep_points(root, "table1/rm20") == {10.0: "alpha_sweep/table1/rm20/alpha10",
                                                             100.0: "alpha_sweep/table1/rm20/alpha100"}
    assert alpha_sweep.sweep_points(root, "table1/mse") == {}  # not swept: the table's row alone is no sweep


def test_input_pixels_are_what_the_network_sees():
    def runs(data):
        df = pd.DataFrame()
        df.attrs["config"] = {"data": data}
        return {0: df}

    # Drishti-GS: the prepared 512 x 512 image seen 2x coarser; LA: the patch, already cut from the coarse volume
    assert alpha_sweep.input_pixels(runs({"name": "gs", "image_size": [512, 512], "downsample": [2, 2]})) == 256 * 256
    assert alpha_sweep.input_pixels(runs({"name": "la", "patch_size": [64, 64, 48], "downsample": [2, 2, 2]})) == 64 * 64 * 48
    assert alpha_sweep.input_pixels(runs({"name": "gs", "image_size": [128, 128], "downsample": None})) == 128 * 128
