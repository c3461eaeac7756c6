"""``launcher=slurm`` against a real SLURM: a single-node cluster on this machine (scripts/slurm_localhost.sh)
runs a two-job multirun of tiny synthetic runs, and one job, signalled as at its time limit after its
first checkpoint, is requeued by submitit and resumes bitwise where it stopped.

Skipped where SLURM cannot be started here: without slurmctld/slurmd/munged (``apt-get install -y slurm-wlm
munge``), without root (slurmd runs jobs as their user), or without the ``cluster`` extra. ``.ci/run``
installs the packages, so CI runs it; a cluster that is installed but does not start fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from rmseg.engine.run_dir import run_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "slurm_localhost.sh"
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")

MAX_ITERS, CHECKPOINT_EVERY = 600, 20  # ~20 ms per iteration here: seconds of training left after the first checkpoint
TINY = ["experiment=table1/rm20", "data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]",
        "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]",
        "model.strides=[2,2]", "trainer=demo", f"trainer.max_iters={MAX_ITERS}",
        f"trainer.checkpoint_every={CHECKPOINT_EVERY}", f"trainer.log_every={CHECKPOINT_EVERY}"]
# no GPU, one core and 1 GB per job; the time limit is far beyond the run, so only the test's signal interrupts it
LAUNCHER = ["launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=debug",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
NAMES = ("slurm/plain", "slurm/requeued")  # the same run twice (same seed), in the sweep's order: array tasks 0, 1


def _why_not() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd runs jobs as their user)"
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return "hydra-submitit-launcher missing: pip install -e '.[cluster]'"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Folder and environment (``SLURM_CONF``) of a single-node SLURM started for this module, stopped after it."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, f"local SLURM did not start:\n{start.stdout}\n{start.stderr}"
        yield folder, {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    finally:
        subprocess.run([str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60)


def _wait(condition, what: str, timeout: float, sweep: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if sweep.poll() is not None:
            pytest.fail(f"the sweep ended (exit {sweep.returncode}) before {what}:\n{sweep.stdout.read()}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _squeue(env: dict[str, str], job: str, fields: str = "%T %r") -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", fields], env=env, capture_output=True, text=True)
    return out.stdout.strip()


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def test_a_slurm_multirun_completes_and_a_requeued_job_resumes_bitwise(slurm, tmp_path):
    folder, env = slurm
    results = tmp_path / "results"
    sweep_dir = tmp_path / "multirun"
    command = [sys.executable, "-m", "rmseg.cli.train", "--multirun", *TINY, *LAUNCHER, f"name={','.join(NAMES)}",
               f"paths.results_dir={results}", f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep_dir}"]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        plain, requeued = (run_dir(results / "runs", name, 0) for name in NAMES)
        # array task 1 trains slurm/requeued: once its first checkpoint is written, SLURM sends the signal it
        # sends before a job's time limit (USR2); submitit requeues the job, which resumes from the checkpoint
        _wait(requeued.checkpoint.is_file, "the first checkpoint of slurm/requeued", 180, sweep)
        job = _wait(lambda: next((p.name for p in (sweep_dir / ".submitit").glob("*_1")), None),
                    "the job folder of slurm/requeued", 30, sweep)
        raw_id = int(_squeue(env, job, "%A"))
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)
        _wait(lambda: _squeue(env, job) == "PENDING BeginTime", f"job {job} requeued", 60, sweep)
        # SLURM holds a requeued job for 121 s (its begin time); a test need not wait that long. Released
        # before slurmd has ended its first run (the step files in its spool), or within the second of the
        # kill, the job would fail at once ("Job credential revoked").
        _wait(lambda: not any(folder.joinpath("spool").glob(f"*_{raw_id}.*")), f"the first run of {job} ended",
              60, sweep)
        time.sleep(2)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
        output, _ = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()  # its jobs are cancelled when the cluster stops
    assert sweep.returncode == 0, output

    for run in (plain, requeued):
        for name in ("config.yaml", "provenance.json", "train.log", "checkpoint.pt", "summary.json", "per_case.csv",
                     "curve.csv"):
            assert (run.final / name).is_file(), (run.final, name)
        assert not run.tmp.exists()
    log = (requeued.final / "train.log").read_text()
    resumed_at = [int(line.split("at iteration ")[1].split()[0]) for line in log.splitlines()
                  if "resumed" in line and "at iteration " in line]
    assert len(resumed_at) == 1 and 0 < resumed_at[0] < MAX_ITERS, log  # interrupted mid-training, resumed once
    assert "resumed" not in (plain.final / "train.log").read_text()
    submitit_log = "".join(p.read_text() for p in (sweep_dir / ".submitit" / job).glob("*_log.err"))
    # submitit caught the signal and requeued the job (SLURM ends the step before submitit logs it)
    assert "Caught signal SIGUSR2" in submitit_log and "DUE TO JOB REQUEUE" in submitit_log, submitit_log

    # resume is bitwise: the interrupted run equals the uninterrupted one
    a, b = final_weights(plain.final), final_weights(requeued.final)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    cases = [json.loads((r.final / "summary.json").read_text())["cases"] for r in (plain, requeued)]
    assert cases[0] == cases[1]
    pd.testing.assert_frame_equal(pd.read_csv(requeued.final / "curve.csv"), pd.read_csv(plain.final / "curve.csv"))
