"""Run folders: an OS lock held by the live process, file permissions, stale data-preparation folders."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rmseg.config import compose_config
from rmseg.data.prepared import prepare_once
from rmseg.engine.run_dir import RunInUse, lock_run, run_dir
from rmseg.cli.train import train

TINY_GS = ["experiment=table1/rm20", "data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]",
           "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]",
           "model.strides=[2,2]", "trainer=demo", "trainer.checkpoint_every=2", "trainer.log_every=1"]


def tiny(tmp_path: Path, *extra: str):
    return compose_config([*TINY_GS, "trainer.max_iters=2", f"paths.results_dir={tmp_path / 'results'}",
                           f"paths.data_dir={tmp_path / 'data'}", *extra])


@pytest.mark.parametrize("resume", ["false", "true"])
def test_a_run_locked_by_another_process_is_refused_naming_its_pid_and_left_untouched(tmp_path, resume):
    cfg = tiny(tmp_path, f"resume={resume}")
    run = run_dir(cfg.paths.runs_dir, cfg.name, cfg.seed)
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom rmseg.engine.run_dir import lock_run, run_dir\n"
                               f"h = lock_run(run_dir({str(cfg.paths.runs_dir)!r}, {cfg.name!r}, 0))\n"
                               "print('locked', flush=True)\nsys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=rf"in use by process {holder.pid} on {socket.gethostname()}"):
            train(cfg)
        assert not run.tmp.exists() and not run.final.exists()
    finally:
        holder.communicate("", timeout=30)
    assert train(cfg) == run.final  # the lock went with its process


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    cfg = tiny(tmp_path)
    run = run_dir(cfg.paths.runs_dir, cfg.name, cfg.seed)
    with pytest.raises(ValueError):
        train(tiny(tmp_path, "optim.lr=-1"))
    assert train(cfg) == run.final
    assert not run.lock.exists()  # removed by the completed run
    lock_run(run).close()  # free again: neither the failed nor the completed run kept it


def test_two_identical_runs_started_at_once_one_trains_the_other_is_refused(tmp_path, repo_root):
    command = [sys.executable, "-m", "rmseg.cli.train", *TINY_GS, "trainer.max_iters=100", "on_exists=fail",
               f"paths.results_dir={tmp_path / 'results'}", f"paths.data_dir={tmp_path / 'data'}"]
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"in use by process {procs[winner].pid}" in outputs[loser], outputs[loser]
    final = tmp_path / "results" / "runs" / "table1" / "rm20" / "seed0"
    log = (final / "train.log").read_text()
    assert log.count("run table1/rm20:") == 1 and (final / "summary.json").is_file()
    assert not (final.parent / ".seed0.tmp").exists()


def test_summary_and_per_case_get_the_permissions_of_the_other_run_files(tmp_path):
    previous = os.umask(0o027)
    try:
        final = train(tiny(tmp_path))
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in final.iterdir() if p.is_file()}
    assert modes["summary.json"] == modes["per_case.csv"] == modes["config.yaml"] == 0o640, modes


def test_a_preparation_folder_left_by_a_killed_process_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "prepared"
    stale = [tmp_path / f".prepared.tmp-{socket.gethostname()}-{dead.pid}", tmp_path / f".prepared.tmp-{dead.pid}"]
    alive = tmp_path / f".prepared.tmp-{socket.gethostname()}-{os.getpid()}x"  # not a pid: never touched
    for folder in (*stale, alive):
        folder.mkdir()
        (folder / "half.png").write_bytes(b"")
    def write(tmp: Path) -> dict:
        (tmp / "done").write_text("1")
        return {}

    prepare_once(target, {"p": 1}, write)
    assert (target / "done").is_file()
    assert not any(p.exists() for p in stale) and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prepared", alive.name])
