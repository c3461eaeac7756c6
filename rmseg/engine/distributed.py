"""Data-parallel training of one run under torchrun (``torch.distributed`` + ``DistributedDataParallel``).

    torchrun --standalone --nproc_per_node=4 -m rmseg.cli.train experiment=table2/rm4

torchrun is the launcher: it starts one process per device and sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them (plain ``rmseg-train``) the run is one
process and nothing here talks to another process. With them, every process trains the same model on its
own share of each global batch (``rmseg.engine.sampling.RankShare``), DDP averages the gradients, and rank 0
alone writes the run folder and evaluates; the other ranks wait for it (:meth:`Ranks.wait_for_main`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")

#: How long ranks 1..N-1 wait for rank 0 to evaluate the test set and complete the run folder.
MAIN_WORK_TIMEOUT = timedelta(hours=12)


@dataclass
class Ranks:
    """This process's place in a torchrun job: ``world_size`` processes, this one is ``rank``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    _wait_group: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """Read torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; one process when they are absent. An srun
        step of several tasks without them (SLURM ``tasks_per_node > 1``) is refused: each task would train
        the same run."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            tasks = environ.get("SLURM_STEP_NUM_TASKS", "1")  # set by srun (submitit starts its tasks so)
            if tasks.isdigit() and int(tasks) > 1:
                raise ValueError(
                    f"this SLURM job step runs {tasks} tasks (SLURM_PROCID={environ.get('SLURM_PROCID', '?')}) but rmseg trains "
                    "one run per process unless torchrun starts it: keep hydra.launcher.tasks_per_node=1 (one job, "
                    "one GPU, per run), or run torchrun --nproc_per_node=N -m rmseg.cli.train inside one task")
            return cls()
        values = {}
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            try:
                values[key] = int(environ.get(key, "0"))
            except ValueError:
                raise ValueError(f"{key}={environ[key]!r} is not an integer: launch with torchrun, "
                                 "which sets it") from None
        world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
        if world < 1 or not 0 <= rank < world or not 0 <= local <= rank:
            raise ValueError(f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local} is not a valid torchrun rank: "
                             "launch with torchrun (or unset WORLD_SIZE for a single process)")
        return cls(world, rank, local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, setting: str) -> torch.device:
        """The device of this rank for ``trainer.device``: one CUDA device per rank, ``cuda:LOCAL_RANK``.

        ``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:LOCAL_RANK``;
        ``cpu`` -> every rank on the CPU (gloo). ``cuda:N`` is refused under torchrun: ranks pick their own.
        """
        if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if setting not in ("auto", "cuda"):
            raise ValueError(f"trainer.device={setting!r} under torchrun: use trainer.device=cuda (or auto), each "
                             "rank then takes cuda:LOCAL_RANK; select GPUs with CUDA_VISIBLE_DEVICES")
        if self.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={self.local_rank} but this node has {torch.cuda.device_count()} CUDA "
                             "device(s): lower --nproc_per_node to the number of GPUs")
        return torch.device("cuda", self.local_rank)

    def share(self, batch_size: int) -> int:
        """Samples per rank of a global batch of ``batch_size``; ValueError if it does not divide evenly."""
        if batch_size % self.world_size:
            raise ValueError(f"data.batch_size={batch_size} (the global batch) cannot be split evenly over "
                             f"{self.world_size} processes: use a multiple of {self.world_size} or another "
                             "--nproc_per_node")
        return batch_size // self.world_size

    # -------------------------------------------------------------- process group

    def start(self, device: torch.device) -> None:
        """Join the process group: nccl on CUDA, gloo on CPU (no-op for one process)."""
        if not self.enabled:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        # rank 0's evaluation may take long: the others wait on a CPU group with its own timeout
        self._wait_group = dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
        self._wait_group = None

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``DistributedDataParallel(model)`` (parameters and buffers broadcast from rank 0); ``model`` alone
        for one process. BatchNorm keeps per-rank batch statistics; its running buffers are rank 0's."""
        if not self.enabled:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # -------------------------------------------------------------- agreement between ranks

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result to every rank. If it raises, rank 0 re-raises and
        the other ranks raise RuntimeError quoting it, so no rank waits for a rank that has failed."""
        if not self.enabled:
            return fn()
        payload: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                payload[0] = ("ok", fn())
            except Exception as err:  # re-raised below, after the other ranks are told
                error, payload[0] = err, ("error", f"{type(err).__name__}: {err}")
        dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        status, value = payload[0]
        if status == "error":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    def wait_for_main(self) -> None:
        """Barrier on which ranks 1..N-1 wait while rank 0 works alone (up to :data:`MAIN_WORK_TIMEOUT`)."""
        if self.enabled:
            dist.barrier(group=self._wait_group)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any (e.g. a SIGTERM seen by one process)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def same(self, value: Any, what: str, fix: str) -> Any:
        """``value`` when every rank holds the same (gathered from all ranks), else RuntimeError on every rank
        listing each rank's value, so that no rank waits for a rank that went another way."""
        if not self.enabled:
            return value
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values):
            raise RuntimeError(f"the ranks disagree on {what} ({', '.join(f'rank {r}: {v}' for r, v in enumerate(values))}): "
                               f"{fix}")
        return value

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (same keys on every rank)."""
        if not self.enabled or not values:
            return dict(values)
        tensor = torch.tensor([float(v) for v in values.values()], dtype=torch.float64,
                              device=self._collective_device())
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(values, tensor.tolist())}

    def _collective_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
