"""Command lines: experiment globs, data overrides in a sweep, make data's DATA, the pre-sweep estimate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rmseg.config import experiment_names
from rmseg.config.sweep import sweep_arguments
from rmseg.cli.preflight import report


def test_an_experiment_glob_expands_to_the_rows_of_its_folder():
    rows = experiment_names("table1")
    assert sweep_arguments(["-m", "experiment=glob(table1/*)", "seed=0,1"]) == [
        "-m", "experiment=" + ",".join(rows), "seed=0,1", "data=gs"]
    with pytest.raises(ValueError, match=r"glob\(tabel1/\*\) matches no experiment.*experiment=glob\(table1/\*\)"):
        sweep_arguments(["-m", "experiment=glob(tabel1/*)"])


def test_data_overrides_across_datasets_are_refused_and_a_given_data_is_kept():
    with pytest.raises(ValueError, match="different datasets"):
        sweep_arguments(["-m", "experiment=table1/rm20,table2/rm4", "data.batch_size=2"])
    args = ["-m", "experiment=table2/rm4,table2/vnet", "data=la_synthetic"]
    assert sweep_arguments(args) == args


def test_hydra_flags_and_their_values_pass_through(repo_root):
    args = ["experiment=table2/sdf", "protocol=cpu", "--cfg", "job", "--package", "optim"]
    assert sweep_arguments(args) == args
    proc = subprocess.run([sys.executable, "-m", "rmseg.cli.train", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout
    assert "lr: 0.01" in printed and "lr_step_iters: 1250" in printed, printed


def _sweep(repo_root: Path, tmp_path: Path, *args: str) -> str:
    """A multirun whose every job stops at its config check (max_iters=0): what the sweep launched."""
    command = [sys.executable, "-m", "rmseg.cli.train", "--multirun", *args, "trainer.max_iters=0",
               f"paths.results_dir={tmp_path}"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo_root)})
    return proc.stdout + proc.stderr


def test_a_table1_glob_launches_the_tables_rows(repo_root, tmp_path):
    out = _sweep(repo_root, tmp_path, "experiment=glob(table1/*)")
    assert f"Launching {len(experiment_names('table1'))} jobs" in out, out
    assert "trainer.max_iters=0 must be" in out


def test_la_overrides_in_a_table2_sweep_reach_the_la_rows(repo_root, tmp_path):
    out = _sweep(repo_root, tmp_path, "experiment=table2/rm4,table2/vnet", "data.patch_size=[64,64,48]")
    assert "DrishtiConfig" not in out, out
    assert "#0 : experiment=table2/rm4 data.patch_size=[64,64,48]" in out and "trainer.max_iters=0 must be" in out


def test_make_data_and_reproduce_honour_data_and_print_the_estimate_first(repo_root, tmp_path):
    (tmp_path / "la2018").mkdir()
    data = subprocess.run(["make", "-n", "data", f"DATA={tmp_path}"], cwd=repo_root, capture_output=True, text=True)
    assert f"scripts/download_data.py --root {tmp_path}" in data.stdout, data.stdout
    la = subprocess.run(["make", "-n", "reproduce-la", f"DATA={tmp_path}", "ARGS=trainer.max_iters=1"], cwd=repo_root,
                        capture_output=True, text=True).stdout
    preflight, train = la.index("-m rmseg.cli.preflight protocol=paper experiment=table2/"), la.index("-m rmseg.cli.train")
    assert preflight < train and "trainer.max_iters=1" in la[preflight:train], la


TINY_GS = ["data.image_size=[32,32]", "data.synthetic.shape=[48,48]", "data.synthetic.num_train=4",
           "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]", "model.strides=[2,2]",
           "trainer=demo", "trainer.max_iters=1000"]


def test_the_estimate_names_device_protocol_runs_left_and_warns_for_paper_on_cpu(tmp_path):
    (tmp_path / "runs" / "table1" / "rm20" / "seed0").mkdir(parents=True)
    lines = report(["protocol=paper", "experiment=glob(table1/rm20*)", "seed=0,1", "data=gs_synthetic",
                    "trainer.device=cpu", f"paths.results_dir={tmp_path}", *TINY_GS])
    text = "\n".join(lines)
    assert lines[:3] == ["device: cpu", "protocol: paper", "runs: 5 to train of 6 (1 complete)"], text
    rates = {m[1]: float(m[2]) for m in re.finditer(r"  (table1/\S+): (\S+) s per iteration", text)}
    assert sorted(rates) == ["table1/rm20", "table1/rm20_02", "table1/rm20_02_22"]
    seconds = 1000 * (rates["table1/rm20"] + 2 * rates["table1/rm20_02"] + 2 * rates["table1/rm20_02_22"])
    h, m, s = re.search(r"estimated training time: (?:(\d+) h )?(\d+) min(?: (\d+) s)?", text).groups(default="0")
    printed = 3600 * int(h) + 60 * int(m) + int(s)
    # the rates are printed to 3 significant digits (relative error <= 5e-3), the time to the second or minute
    assert abs(printed - seconds) <= 5e-3 * seconds + (60 if int(h) else 1), (printed, seconds)
    assert lines[-1].startswith("WARNING: the paper protocol is starting on a CPU")
    cpu = report(["protocol=cpu", "experiment=table1/rm20", "data=gs_synthetic", f"paths.results_dir={tmp_path}",
                  *TINY_GS])
    assert not any(line.startswith("WARNING") for line in cpu)
