"""GPU and cluster code paths tested on CPU: the CUDA RNG of the current device only, ranks agreeing on the
start iteration (gloo, two processes), SLURM task counts, requeue settings, no host sync per training step."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rmseg.cli.train as train_module
import rmseg.engine.loop as loop_module
from rmseg.config import compose_config
from rmseg.config.sweep import sweep_arguments
from rmseg.engine.distributed import Ranks
from rmseg.cli.train import train
from rmseg.engine.checkpoint import rng_states, set_rng_states

TINY_GS = ["experiment=table1/rm20", "data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]",
           "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]",
           "model.strides=[2,2]", "trainer=demo"]


def tiny(tmp_path: Path, *extra: str):
    return compose_config([*TINY_GS, f"paths.results_dir={tmp_path / 'results'}", f"paths.data_dir={tmp_path / 'data'}",
                           *extra])


class FakeCuda:
    """torch.cuda as seen by a process on device ``current`` of a machine with one state per visible device."""

    def __init__(self, current: int) -> None:
        self.current, self.restored = current, []

    def install(self, monkeypatch) -> None:
        def forbidden(*_args):
            raise AssertionError("all devices' RNG states touched")

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([self.current], dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.restored.append(state))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)


def test_cuda_rng_is_saved_and_restored_for_the_current_device_only(monkeypatch):
    saving = FakeCuda(current=3)
    saving.install(monkeypatch)
    states = rng_states()
    assert torch.equal(states["cuda"], torch.tensor([3], dtype=torch.uint8))
    resuming = FakeCuda(current=0)  # resumed with fewer devices visible
    resuming.install(monkeypatch)
    set_rng_states(states)
    assert len(resuming.restored) == 1 and torch.equal(resuming.restored[0], states["cuda"])
    older = {**states, "cuda": [torch.tensor([7], dtype=torch.uint8), torch.tensor([8], dtype=torch.uint8)]}
    set_rng_states(older)  # a checkpoint holding every device's state: the current device's is taken
    assert torch.equal(resuming.restored[-1], torch.tensor([7], dtype=torch.uint8))


CASES = {"agree": [6, 6], "one rank without the checkpoint": [6, 0]}


def _agree(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for case, values in CASES.items():
            try:
                result = Ranks(2, rank, rank).same(values[rank], "the start iteration", "share the run folder")
            except RuntimeError as err:
                result = f"error: {err}"
            Path(out, f"{case} {rank}").write_text(str(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_agree_on_the_start_iteration_or_all_fail(tmp_path):
    mp.spawn(_agree, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"agree {r}").read_text() for r in range(2)] == ["6", "6"]
    for rank in range(2):  # every rank stops: none waits in a collective for the other
        assert (tmp_path / f"one rank without the checkpoint {rank}").read_text() == (
            "error: the ranks disagree on the start iteration (rank 0: 6, rank 1: 0): share the run folder")


def test_slurm_steps_of_several_tasks_are_refused():
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2"}
    with pytest.raises(ValueError, match="runs 2 tasks .*SLURM_PROCID=1.*tasks_per_node=1"):
        Ranks.from_env(env)
    assert not Ranks.from_env({**env, "SLURM_STEP_NUM_TASKS": "1"}).enabled  # one task of a larger allocation
    torchrun = Ranks.from_env({**env, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})  # torchrun in a task
    assert (torchrun.world_size, torchrun.rank) == (2, 1)
    with pytest.raises(ValueError, match="keep tasks_per_node=1"):
        sweep_arguments(["-m", "launcher=slurm", "hydra.launcher.tasks_per_node=2"])


def test_the_slurm_launcher_requeues_on_timeout_and_resumes():
    cfg = compose_config(["experiment=table1/rm20", "launcher=slurm"], return_hydra_config=True)
    assert cfg.resume is True and cfg.hydra.launcher.max_num_timeout > 0 and cfg.hydra.launcher.tasks_per_node == 1
    assert compose_config(["experiment=table1/rm20"]).resume is False


def _count_host_syncs(monkeypatch, counts: list[int]) -> None:
    """Count the calls that copy a tensor's value to the host, made from the training code itself (the run
    and its loop)."""
    for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if sys._getframe(1).f_code.co_filename in (train_module.__file__, loop_module.__file__):
                counts[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)


def test_training_steps_between_log_points_make_no_host_sync(tmp_path, monkeypatch):
    syncs = {}
    for iters in (2, 6):
        counts = [0]
        with monkeypatch.context() as patch:
            _count_host_syncs(patch, counts)
            train(tiny(tmp_path / str(iters), f"trainer.max_iters={iters}", f"trainer.log_every={iters}",
                       f"trainer.checkpoint_every={iters}"))
        syncs[iters] = counts[0]
    assert syncs[2] == syncs[6] > 0, syncs  # the same log and checkpoint points: no more syncs for more steps


def test_a_nan_loss_stops_the_run_at_the_next_check_before_a_checkpoint(tmp_path, monkeypatch):
    build = train_module.build_loss

    def poisoned(loss_cfg):
        loss, calls = build(loss_cfg), [0]
        forward = loss.forward

        def nan_from_the_third_call(*args, **kwargs):
            calls[0] += 1
            value = forward(*args, **kwargs)
            return value * float("nan") if calls[0] >= 3 else value

        loss.forward = nan_from_the_third_call
        return loss

    monkeypatch.setattr(train_module, "build_loss", poisoned)
    cfg = tiny(tmp_path, "trainer.max_iters=8", "trainer.log_every=4", "trainer.checkpoint_every=2")
    with pytest.raises(FloatingPointError, match="NaN/Inf at one of iterations 3 to 4"):
        train(cfg)
    state = torch.load(tmp_path / "results" / "runs" / "table1" / "rm20" / ".seed0.tmp" / "checkpoint.pt",
                       weights_only=True)
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
