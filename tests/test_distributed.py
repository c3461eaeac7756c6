"""Data-parallel training under torchrun (gloo on CPU): rank shares of the global batch, the torchrun
environment, and two-process runs checked against one-process runs of the same global batch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rmseg.config import compose_config
from rmseg.engine.distributed import Ranks
from rmseg.engine.run_dir import run_dir
from rmseg.engine.sampling import RankShare, ResumableSampler
from rmseg.cli.train import train

from conftest import tol

# model.norm=instance: per-sample normalisation, so two ranks of one sample each compute what one process
# computes on the batch of two (BatchNorm's batch statistics would differ per rank; see docs/training.md)
TINY = ["experiment=table1/rm20", "data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]",
        "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]",
        "model.strides=[2,2]", "model.norm=instance", "trainer=demo", "trainer.log_every=1"]
REPO = Path(__file__).resolve().parents[1]
# DDP averages the two ranks' gradients where one process averages over the batch: the same sum in
# another order, so float32 weights agree to rounding (measured: 4e-9 after 4 iterations), not bit for bit:
# a gradient is a sum over 2 samples x 32 x 32 pixels (pairwise in torch, the halves added by the all-reduce),
# and its rounding reaches a weight through updates smaller than the weight; weights are O(1) at most (atol)
CLOSE = {"rtol": tol(torch.float32, 2 * 32 * 32, summation="pairwise"),
         "atol": tol(torch.float32, 2 * 32 * 32, summation="pairwise")}


def overrides(results: Path, data: Path, *extra: str) -> list[str]:
    return [*TINY, f"paths.results_dir={results}", f"paths.data_dir={data}", *extra]


def torchrun(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "rmseg.cli.train", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **CLOSE, msg=key)


# ---------------------------------------------------------------- rank shares and environment


def test_rank_shares_are_disjoint_and_rebuild_the_one_process_batches():
    batch, iterations = 4, 5
    stream = list(zip(range(batch * iterations), ResumableSampler(7, seed=3)))
    one_process = [[item for _, item in stream[t * batch:(t + 1) * batch]] for t in range(iterations)]
    for world in (1, 2, 4):
        share = batch // world
        per_rank = []
        for rank in range(world):
            it = iter(RankShare(ResumableSampler(7, seed=3), batch, rank, world))
            per_rank.append([[next(it) for _ in range(share)] for _ in range(iterations)])
        for t in range(iterations):  # rank r holds the r-th slice of the same global batch
            assert [item for rank in range(world) for item in per_rank[rank][t]] == one_process[t]
    resumed = iter(RankShare(ResumableSampler(7, seed=3, start=2 * batch), batch, rank=1, world_size=2))
    assert [next(resumed) for _ in range(2)] == one_process[2][2:]


@pytest.mark.parametrize("kwargs, match", [({"rank": 2, "world_size": 2}, "rank=2"),
                                           ({"rank": 0, "world_size": 3}, "batch_size=4 must be a positive multiple"),
                                           ({"rank": 0, "world_size": 2, "start": 2}, "start=2 must be at a batch")])
def test_rank_share_rejects_bad_arguments(kwargs, match):
    start = kwargs.pop("start", 0)
    with pytest.raises(ValueError, match=match):
        RankShare(ResumableSampler(5, seed=0, start=start), 4, **kwargs)


def test_torchrun_environment_is_read_and_checked():
    assert Ranks.from_env({}) == Ranks(1, 0, 0) and not Ranks.from_env({}).enabled
    ranks = Ranks.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (ranks.world_size, ranks.rank, ranks.local_rank, ranks.enabled, ranks.is_main) == (4, 3, 1, True, False)
    assert ranks.share(8) == 2 and ranks.device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="data.batch_size=6 .* multiple of 4"):
        ranks.share(6)
    with pytest.raises(ValueError, match="trainer.device='cuda:1' under torchrun: use trainer.device=cuda"):
        ranks.device("cuda:1")
    with pytest.raises(ValueError, match="RANK=4, LOCAL_RANK=0 is not a valid torchrun rank"):
        Ranks.from_env({"WORLD_SIZE": "4", "RANK": "4", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        Ranks.from_env({"WORLD_SIZE": "2", "RANK": "x"})


def test_one_process_helpers_need_no_process_group():
    ranks = Ranks()
    model = torch.nn.Linear(2, 2)
    assert ranks.wrap(model, torch.device("cpu")) is model
    assert ranks.on_main(lambda: 7) == 7 and ranks.any(True) and not ranks.any(False)
    assert ranks.mean({"loss": 1.5}) == {"loss": 1.5}
    ranks.wait_for_main()


def test_batch_that_does_not_split_over_the_ranks_fails_before_any_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="data.batch_size=3 .* cannot be split evenly over 2 processes"):
        train(compose_config(overrides(tmp_path, tmp_path / "data", "data.batch_size=3")))
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- two processes under torchrun


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_and_write_the_run_folder_once(tmp_path):
    args = overrides(tmp_path / "ddp", tmp_path / "data", "trainer.max_iters=4", "trainer.checkpoint_every=2",
                     "trainer.tensorboard=true")
    code, output = finish(torchrun(args))
    assert code == 0, output
    single = train(compose_config(overrides(tmp_path / "single", tmp_path / "data", "trainer.max_iters=4",
                                            "trainer.checkpoint_every=2")))
    run = tmp_path / "ddp" / "runs" / "table1" / "rm20" / "seed0"
    assert sorted(p.name for p in run.parent.iterdir()) == ["seed0"]  # completed, no temporary folder left
    for name in ("config.yaml", "provenance.json", "train.log", "checkpoint.pt", "summary.json", "per_case.csv"):
        assert (run / name).is_file(), name
    assert len(list((run / "tensorboard").iterdir())) == 1  # one writer: rank 0's
    log = (run / "train.log").read_text()
    assert [log.count(f"iteration {i}/4 ") for i in range(1, 5)] == [1, 1, 1, 1]
    assert log.count("data parallel over 2 processes (cpu): 1 of the 2 samples") == 1
    assert log.count("run complete") == 1
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 4 and not any(k.startswith("module.") for k in state["model"])
    assert_close_weights(weights(run), weights(single))
    # the logged loss is the mean over the ranks' shares: the one-process loss of the global batch
    logged = [[float(m) for m in re.findall(r"iteration \d/4 loss ([0-9.]+)", (r / "train.log").read_text())]
              for r in (run, single)]
    # printed with 5 decimals: one unit in the last place (abs), plus the float32 sums' rounding (rel)
    assert len(logged[0]) == 4 and logged[0] == pytest.approx(logged[1], rel=tol(torch.float32, 2 * 32 * 32), abs=1e-5)


@pytest.mark.slow
def test_sigterm_under_torchrun_checkpoints_once_and_resume_retraces_the_uninterrupted_run(tmp_path):
    """With dropout (masks drawn per rank from (seed, iteration, rank)), a run stopped by SIGTERM and
    resumed under torchrun reaches the uninterrupted two-process run's weights bit for bit."""
    extra = ["model.dropout=0.3", "trainer.max_iters=120", "trainer.checkpoint_every=1000"]
    code, output = finish(torchrun(overrides(tmp_path / "a", tmp_path / "data", *extra)))
    assert code == 0, output
    args = overrides(tmp_path / "b", tmp_path / "data", *extra)
    run = run_dir(tmp_path / "b" / "runs", "table1/rm20", 0)
    process = torchrun(args)
    deadline = time.monotonic() + 90
    while not ((run.tmp / "train.log").is_file() and "iteration 2/" in (run.tmp / "train.log").read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to both ranks
    code, output = finish(process)
    assert code != 0, output
    state = torch.load(run.checkpoint, map_location="cpu", weights_only=True)
    assert 2 <= state["iteration"] < 120 and not run.final.exists()
    log = (run.tmp / "train.log").read_text()
    assert log.count("SIGTERM at iteration") == 1 and f"SIGTERM at iteration {state['iteration']}:" in log

    code, output = finish(torchrun([*args, "resume=true"]))
    assert code == 0, output
    assert f"resumed {run.tmp} at iteration {state['iteration']}" in (run.final / "train.log").read_text()
    uninterrupted, resumed = weights(tmp_path / "a" / "runs" / "table1" / "rm20" / "seed0"), weights(run.final)
    assert uninterrupted.keys() == resumed.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key
