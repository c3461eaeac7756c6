"""The training loop: :class:`Trainer` owns the model, loss, optimizer, scheduler and AMP scaler.

:meth:`Trainer.step` is one SGD iteration (forward under autocast, loss in float32, backward through the
gradient scaler, optimizer and scheduler step); ``benchmarks/training.py`` times exactly this step.
:meth:`Trainer.fit` runs steps up to ``trainer.max_iters`` with what a run needs around them: the loss
schedule's epoch, a NaN/Inf check at log and checkpoint iterations (one host sync there), the logged curve
(``curve.csv``, tensorboard, progress bar), checkpoints every ``trainer.checkpoint_every`` iterations and
at the end, and a checkpoint then :class:`RunInterrupted` on SIGINT/SIGTERM.

Under DDP (``rmseg.engine.distributed``) ``net`` is the wrapped (then compiled) network that trains;
``model`` (unwrapped and uncompiled, same parameters) is what checkpoints save and evaluation uses.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from tqdm import tqdm

from rmseg.engine.checkpoint import rng_states, set_rng_states
from rmseg.engine.curve import CurveLog, gradient_shares
from rmseg.engine.distributed import Ranks
from rmseg.engine.sampling import derived_seed
from rmseg.engine.speed import compile_for_training, in_format, memory_format

log = logging.getLogger("rmseg.train")


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint; ``resume=true`` continues the run."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def build_loss(loss_cfg: Any) -> torch.nn.Module:
    """Instantiate the ``loss`` node (``_target_`` classes); a bad argument raises ValueError naming it."""
    try:
        return instantiate(loss_cfg, _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"loss config cannot be built: {err}") from err


def build_optimizer(model: torch.nn.Module, optim: Mapping[str, Any]):
    """SGD and its step schedule (``optim.lr_step_iters`` None: no decay)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                                weight_decay=optim["weight_decay"], nesterov=optim["nesterov"])
    step = optim["lr_step_iters"] or 2**62  # no decay: a step that is never reached
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=optim["lr_gamma"])
    return optimizer, scheduler


@contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """Record SIGINT/SIGTERM in the yielded dict (``signum``) instead of dying mid-iteration."""
    request: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, _frame: Any) -> None:
        request["signum"] = signum
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Step:
    """What one :meth:`Trainer.step` leaves for logging: the loss (a detached-able scalar, not synchronised),
    the float32 output and the batch's label and loss context on the device."""

    loss: torch.Tensor
    output: torch.Tensor
    label: torch.Tensor
    context: dict[str, torch.Tensor]


class Trainer:
    """One model's training state and step.

    Args:
        model: the network, on ``device`` and in the memory format of ``trainer["channels_last"]``.
        loss_fn: the training loss (``build_loss``), on ``device``.
        optim: the ``optim`` config (SGD + step schedule).
        trainer: the ``trainer`` config; read here: ``amp``, ``amp_dtype``, ``channels_last``, ``compile``.
        spatial_dims: of the inputs (2 or 3), for the channels-last format.
        ranks: the torchrun processes (one by default); with several, ``net`` is DDP and each rank draws
            its dropout masks from ``(seed, iteration, rank)``.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module, optim: Mapping[str, Any],
                 trainer: Mapping[str, Any], *, device: torch.device, spatial_dims: int, ranks: Ranks | None = None,
                 seed: int = 0) -> None:
        self.model, self.loss_fn, self.device, self.seed = model, loss_fn, device, seed
        self.ranks = ranks or Ranks()
        self.optimizer, self.scheduler = build_optimizer(model, optim)
        dtype = trainer["amp_dtype"]  # a name, or the schema's AmpDtype
        self.amp, self.amp_dtype = bool(trainer["amp"]), getattr(torch, getattr(dtype, "value", dtype))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.format = memory_format(spatial_dims, trainer["channels_last"])
        # DDP, then compile (what torch.compile's DDP support expects)
        self.net = compile_for_training(self.ranks.wrap(model, device), trainer["compile"])
        self.iteration, self.train_time = 0, 0.0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.checked = 0

    # -------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the config (``rmseg.engine.checkpoint``)."""
        return {"iteration": self.iteration, "train_time_s": self.train_time, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states()}

    def load_state_dict(self, state: Mapping[str, Any], source: str = "the checkpoint") -> None:
        """Continue from :meth:`state_dict` (RNG states included); ValueError if it does not fit the model."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{source} does not fit this model/optimizer ({err})") from err
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"])
        self.iteration, self.train_time = state["iteration"], state["train_time_s"]
        self.checked = self.iteration

    # -------------------------------------------------------------- one iteration

    def step(self, batch: Mapping[str, torch.Tensor]) -> Step:
        """One SGD iteration on ``batch`` (``image``, ``label``, optional ``offset`` / ``full_shape``)."""
        device = self.device
        image = in_format(batch["image"].to(device, non_blocking=True), self.format)
        label = batch["label"].to(device, non_blocking=True)
        context = {k: batch[k].to(device, non_blocking=True) for k in ("offset", "full_shape") if k in batch}
        if self.ranks.enabled:  # each rank its own dropout masks, drawn from (seed, iteration, rank)
            torch.manual_seed(derived_seed(self.seed, self.iteration, self.ranks.rank, 2))
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp):
            output = self.net(image)
        loss = self.loss_fn(output.float(), label, **context)
        self.nonfinite = self.nonfinite | ~torch.isfinite(loss.detach())  # on the device: no host sync per step
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return Step(loss.detach(), output, label, context)

    def check_finite(self) -> None:
        """FloatingPointError on every rank if any rank's loss was NaN/Inf since the last check."""
        if self.ranks.any(bool(self.nonfinite)):
            raise FloatingPointError(f"the loss became NaN/Inf at one of iterations {self.checked + 1} to "
                                     f"{self.iteration}: lower optim.lr or check the data; resume=true continues "
                                     "from the last checkpoint")
        self.checked = self.iteration

    def logged_values(self, step: Step) -> dict[str, float]:
        """The curve row of ``step`` (averaged over the ranks: the global batch's values): ``lr``, ``loss``,
        the loss parts, their gradient norms ``grad_*`` and shares ``share_*``."""
        loss_fn, out = self.loss_fn, step.output.detach().float()
        parts = loss_fn.last_components if hasattr(loss_fn, "last_components") else {"total": step.loss.item()}
        grads = {f"grad_{k}": v for k, v in loss_fn.gradient_norms(out, step.label, **step.context).items()} \
            if hasattr(loss_fn, "gradient_norms") else {}
        parts = self.ranks.mean({"loss": step.loss.item(), **parts, **grads})
        loss_value = parts.pop("loss")
        grads = {k: parts.pop(k) for k in grads}
        shares = gradient_shares({k[len("grad_"):]: v for k, v in grads.items()})
        return {"lr": self.optimizer.param_groups[0]["lr"], "loss": loss_value, **parts, **grads, **shares}

    # -------------------------------------------------------------- the loop

    def fit(self, batches: Iterator[Mapping[str, torch.Tensor]], trainer: Mapping[str, Any], *, iters_per_epoch: int,
            save: Callable[[dict[str, Any]], None], name: str = "", curve: CurveLog | None = None,
            writer: Any = None) -> None:
        """Steps until ``trainer["max_iters"]``: logs every ``log_every`` iterations (into ``curve`` and the
        tensorboard ``writer`` when given), calls ``save(state_dict())`` on rank 0 every ``checkpoint_every``
        iterations, at the end and on SIGINT/SIGTERM (then raises :class:`RunInterrupted`)."""
        max_iters = trainer["max_iters"]

        def checkpoint() -> None:
            self.check_finite()
            if self.ranks.is_main:
                save(self.state_dict())

        bar = tqdm(total=max_iters, initial=self.iteration, desc=name, dynamic_ncols=True,
                   disable=not (trainer["progress_bar"] and self.ranks.is_main))
        self.model.train()
        try:
            with stop_on_signals() as stop:
                while self.iteration < max_iters:
                    started = time.perf_counter()
                    self.loss_fn.set_epoch(self.iteration // iters_per_epoch)
                    step = self.step(next(batches))
                    self.train_time += time.perf_counter() - started
                    bar.update(1)
                    iteration = self.iteration
                    if iteration % trainer["log_every"] == 0:
                        self.check_finite()
                    if iteration % trainer["log_every"] == 0 or iteration == max_iters:
                        self._log(step, bar, max_iters, curve, writer)
                    if iteration % trainer["checkpoint_every"] == 0 or iteration == max_iters:
                        checkpoint()
                    if self.ranks.any("signum" in stop):  # every rank stops after the same iteration
                        checkpoint()
                        stop.setdefault("signum", signal.SIGTERM)
                        signame = signal.Signals(stop["signum"]).name
                        log.warning("%s at iteration %d: checkpoint saved; continue with resume=true", signame, iteration)
                        raise RunInterrupted(stop["signum"], f"{signame}: run interrupted at iteration {iteration}, "
                                             "resume=true continues it")
        finally:
            bar.close()
        log.info("training done: %d iterations in %.1f s", self.iteration, self.train_time)

    def _log(self, step: Step, bar: Any, max_iters: int, curve: CurveLog | None, writer: Any) -> None:
        row = self.logged_values(step)
        lr, loss_value = row["lr"], row["loss"]
        rest = {k: v for k, v in row.items() if k not in ("lr", "loss")}
        parts = {k: v for k, v in rest.items() if not k.startswith(("grad_", "share_"))}
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2g}")
        log.info("iteration %d/%d loss %.5f %s lr %.3g", self.iteration, max_iters, loss_value, parts, lr)
        if curve is not None:
            curve.append({"iteration": self.iteration, **row})
        if writer is not None:
            for key, value in rest.items():
                writer.add_scalar(f"loss/{key}", value, self.iteration)
            writer.add_scalar("lr", lr, self.iteration)


def iters_per_epoch(trainer: Mapping[str, Any], num_items: int, batch_size: int) -> int:
    """``trainer.iters_per_epoch``, or ceil(training cases / batch size): the epoch loss schedules see."""
    return trainer["iters_per_epoch"] or math.ceil(num_items / batch_size)
