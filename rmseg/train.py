"""rmseg-train: train one model, evaluate it on the test set, write its run folder.

    rmseg-train experiment=table1/rm20 seed=1            # or: python -m rmseg.train ...
    rmseg-train -m experiment=table2/vnet,table2/rm4 seed=0,1,2
    rmseg-train experiment=table2/rm4 resume=true        # continue an interrupted run

Every bad input (unknown key, RM order of the wrong length, missing data, negative iteration count)
fails before the run folder is created. The run works in ``results/runs/<name>/.seed<k>.tmp/`` and is
renamed to ``seed<k>/`` once ``summary.json`` is written (see ``rmseg.run_dir``).

Training is iteration based over an infinite, resumable sampler (``rmseg.sampling``): a checkpoint
(every ``trainer.checkpoint_every`` iterations, at the end, and on SIGINT/SIGTERM) holds the model,
optimizer, scheduler, AMP scaler, iteration and every RNG state, so ``resume=true`` reaches the same
final weights as an uninterrupted run on the same device.

Speed switches (``rmseg.speed``): ``trainer.channels_last``, ``trainer.cudnn_benchmark`` and ``trainer.compile``
change how the step runs, not what it computes (up to rounding and dropout masks); checkpoints hold the
uncompiled model, so a run may resume with other values of them.

Under ``torchrun --nproc_per_node=N -m rmseg.train ...`` one run trains data-parallel on N devices
(``rmseg.distributed``): ``data.batch_size`` stays the global batch, each rank draws its own share of the
same global batches as a one-process run, DDP averages the gradients, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from monai.utils import set_determinism
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from rmseg import provenance
from rmseg.checkpoint import read_checkpoint, save_checkpoint
from rmseg.curve import CurveLog, gradient_shares
from rmseg.config import CONFIG_DIR, register
from rmseg.config.schema import (MODEL_SCHEMAS, OptimConfig, PathsConfig, ProtocolConfig, RmsegConfig,
                                 TrainerConfig)
from rmseg.config.sweep import sweep_arguments
from rmseg.data import build_train_dataset, check_test_split, load_test_cases
from rmseg.data.config import as_data_config
from rmseg.distributed import Ranks
from rmseg.evaluation import eval_config, evaluate_model, write_summary
from rmseg.models import build_model
from rmseg.run_dir import RunDir, claim, complete, locked, run_dir
from rmseg.sampling import RankShare, ResumableSampler, SeededItems, derived_seed
from rmseg.speed import compile_for_training, in_format, memory_format, set_cudnn_benchmark
from rmseg.tables import log_summary

log = logging.getLogger("rmseg.train")

#: Keys that may differ between a checkpoint (or a completed run) and the config resuming (or skipping) it:
#: they do not change the weights (the speed switches and thread count only up to float rounding and dropout
#: masks; ``data.root`` / ``data.prepared_dir`` say where the same data lies).
RESUME_FREE_KEYS = ("resume", "on_exists", "paths", "trainer.progress_bar", "trainer.tensorboard",
                    "trainer.log_every", "trainer.num_threads", "trainer.channels_last", "trainer.cudnn_benchmark",
                    "trainer.compile", "data.num_workers", "data.root", "data.prepared_dir")


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint; ``resume=true`` continues the run."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


# ---------------------------------------------------------------- start-up checks


def _positive(value: Any, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")


def check_rm_orders(loss_cfg: Any, spatial_dims: int, dataset: str) -> None:
    """Every ``orders`` entry of the loss terms has ``spatial_dims`` components (ValueError otherwise)."""
    for i, term in enumerate(loss_cfg.get("terms") or []):
        for order in term.get("orders") or []:
            if len(order) != spatial_dims:
                example = [2] + [0] * (spatial_dims - 1)
                raise ValueError(
                    f"loss.terms[{i}].orders has {list(order)} with {len(order)} entries but data {dataset!r} is "
                    f"{spatial_dims}D: give {spatial_dims} entries per order, e.g. {example}"
                )


def check_known_keys(resolved: Mapping[str, Any]) -> None:
    """Keys added with ``+key=value`` to a node that has a schema fail like a misspelt key (ValueError)."""
    nodes = {"": (resolved, RmsegConfig)}
    nodes.update({f"{name}.": (resolved[name], schema) for name, schema in
                  (("trainer", TrainerConfig), ("optim", OptimConfig), ("paths", PathsConfig), ("protocol", ProtocolConfig))})
    model_schema = MODEL_SCHEMAS.get(resolved["model"].get("name"))
    if model_schema is not None:
        nodes["model."] = (resolved["model"], model_schema)
    for prefix, (node, schema) in nodes.items():
        known = {f.name for f in fields(schema)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]} (added with '+'?): "
                             f"{prefix.rstrip('.') or 'the root'} takes {sorted(known)}")


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """Validate the composed config; return it resolved as plain containers. Raises ValueError."""
    if OmegaConf.is_missing(cfg, "name"):
        raise ValueError("no experiment chosen: pass experiment=table1/<row> or table2/<row> (configs/experiment/), "
                         "or name=<run name> for a run of your own")
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    check_known_keys(resolved)
    trainer, optim = resolved["trainer"], resolved["optim"]
    _positive(trainer["max_iters"], "trainer.max_iters")
    _positive(trainer["checkpoint_every"], "trainer.checkpoint_every")
    _positive(trainer["log_every"], "trainer.log_every")
    for key in ("iters_per_epoch", "num_threads"):
        if trainer[key] is not None:
            _positive(trainer[key], f"trainer.{key}")
    if trainer["device"] not in ("auto", "cpu") and not trainer["device"].startswith("cuda"):
        raise ValueError(f"trainer.device={trainer['device']!r} must be auto, cpu or cuda[:N]")
    fp16 = trainer["amp"] and trainer["amp_dtype"] == "float16"
    if fp16 and not float16_amp_available(_device(trainer["device"]).type):
        raise ValueError("trainer.amp_dtype=float16 needs a CUDA device or a PyTorch with float16 autocast and "
                         "GradScaler on CPU (2.3 or later): use amp_dtype=bfloat16 on CPU")
    if optim["name"] != "sgd":
        raise ValueError(f"optim.name={optim['name']!r} is unknown: use sgd")
    for key in ("lr", "momentum", "weight_decay", "lr_gamma"):
        if not math.isfinite(optim[key]) or not optim[key] >= 0 or (key == "lr" and optim[key] == 0):
            raise ValueError(f"optim.{key}={optim[key]!r} must be a finite number {'> 0' if key == 'lr' else '>= 0'}")
    if optim["lr_step_iters"] is not None:
        _positive(optim["lr_step_iters"], "optim.lr_step_iters")
    data = as_data_config(cfg.data)
    eval_config(cfg.eval)
    check_rm_orders(resolved["loss"], data.spatial_dims, data.name)
    return resolved


def float16_amp_available(device_type: str) -> bool:
    """Whether float16 autocast and a GradScaler run on ``device_type`` (always on CUDA; on CPU from PyTorch 2.3)."""
    if device_type == "cuda":
        return True
    try:
        torch.amp.GradScaler(device_type)
        with warnings.catch_warnings():  # an unsupported dtype only warns and disables autocast
            warnings.simplefilter("ignore")
            with torch.autocast(device_type, dtype=torch.float16):
                probe = torch.nn.functional.linear(torch.ones(1, 1), torch.ones(1, 1))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return False
    return probe.dtype == torch.float16


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but no CUDA device is available: use trainer.device=cpu")
    return device


def build_loss(loss_cfg: DictConfig) -> torch.nn.Module:
    """Instantiate the ``loss`` node (``_target_`` classes); a bad argument raises ValueError naming it."""
    try:
        return instantiate(loss_cfg, _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"loss config cannot be built: {err}") from err


def build_optimizer(model: torch.nn.Module, optim: Mapping[str, Any]):
    optimizer = torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                                weight_decay=optim["weight_decay"], nesterov=optim["nesterov"])
    step = optim["lr_step_iters"] or 2**62  # no decay: a step that is never reached
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=optim["lr_gamma"])
    return optimizer, scheduler


# ---------------------------------------------------------------- checkpoints


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else [],  # this process's device only
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if len(cuda) and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # checkpoints of older rmseg: every visible device's state
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)  # the current device's, however many devices are visible now


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept whole)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved -> current`` for every key that differs, ignoring :data:`RESUME_FREE_KEYS`."""
    a, b = flatten(saved), flatten(current)
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)  # noqa: E731
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if not free(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]


def check_same_run(final: Path, resolved: Mapping[str, Any]) -> None:
    """A completed run is skipped only if it was made with this config (keys added to rmseg since, absent
    from its ``config.yaml``, do not count); otherwise ValueError naming the differing keys."""
    saved_path = final / "config.yaml"
    if not saved_path.is_file():
        raise ValueError(f"completed run {final} has no config.yaml: it cannot be compared with this config; "
                         "move it away to re-run it")
    saved = OmegaConf.to_container(OmegaConf.load(saved_path))
    diff = [d for d in config_differences(saved, resolved) if d.split(":", 1)[0] in flatten(saved)]
    if diff:
        raise ValueError(f"run {final} is complete but was made with another config: " + "; ".join(diff)
                         + ". Give this run its own folder (name=<new name>, or another seed or paths.runs_dir), "
                         "or move the old one away")


def load_checkpoint(path: Path, resolved_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Read a run's checkpoint to resume it with ``resolved_cfg``; ValueError if unreadable or made with another config."""
    try:
        state = read_checkpoint(path, fix=f"delete {path.parent} to start over")
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    diff = config_differences(state["config"], resolved_cfg)
    if diff:
        raise ValueError(f"cannot resume {path}: the config differs from the checkpoint's in "
                         + "; ".join(diff) + ". Resume with the original values or start a new run (other name/seed)")
    return state


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


# ---------------------------------------------------------------- training


def _batches(dataset: Any, data_cfg: Any, seed: int, start_iteration: int, ranks: Ranks,
             device: torch.device) -> Iterator[dict[str, Any]]:
    """Batches from iteration ``start_iteration`` on: this rank's share of each global batch (in pinned
    memory for a CUDA ``device``, so the copy to the GPU runs asynchronously)."""
    sampler = ResumableSampler(len(dataset), seed, start=start_iteration * data_cfg.batch_size)
    if ranks.enabled:
        sampler = RankShare(sampler, data_cfg.batch_size, ranks.rank, ranks.world_size)
    # its own generator: the loader's base seed must not draw from the global RNG (restored on resume)
    loader = DataLoader(SeededItems(dataset, seed), batch_size=ranks.share(data_cfg.batch_size), sampler=sampler,
                        num_workers=data_cfg.num_workers, persistent_workers=data_cfg.num_workers > 0,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def _attach_log_file(path: Path) -> logging.Handler:
    """Log rmseg's INFO messages and everyone's warnings to ``path`` (appending on resume)."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger("rmseg").level == logging.NOTSET:
        logging.getLogger("rmseg").setLevel(logging.INFO)
    return handler


def train(cfg: DictConfig) -> Path | None:
    """Train, evaluate and complete the run of ``cfg``; the final run folder, or None if skipped."""
    resolved = check_config(cfg)
    data_cfg = as_data_config(cfg.data)
    run = run_dir(resolved["paths"]["runs_dir"], resolved["name"], resolved["seed"])
    if run.final.exists() and resolved["on_exists"] == "skip":
        check_same_run(run.final, resolved)
        log.info("run %s is complete: skipped (on_exists=skip)", run.final)
        return None
    ranks = Ranks.from_env()
    ranks.share(data_cfg.batch_size)
    device = ranks.device(resolved["trainer"]["device"]) if ranks.enabled else _device(resolved["trainer"]["device"])
    threads, rmseg_level = torch.get_num_threads(), logging.getLogger("rmseg").level
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        if resolved["trainer"]["num_threads"] is not None:
            torch.set_num_threads(resolved["trainer"]["num_threads"])
        if not ranks.is_main:  # rank 0 reports; the others only warn
            logging.getLogger("rmseg").setLevel(logging.WARNING)
        ranks.start(device)
        try:
            return _claim_and_train(run, cfg, resolved, data_cfg, device, ranks)
        finally:
            ranks.close()
    finally:
        torch.set_num_threads(threads)
        logging.getLogger("rmseg").setLevel(rmseg_level)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def _build(cfg: DictConfig, data_cfg: Any, device: torch.device) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    dataset = build_train_dataset(cfg.data)
    model = in_format(build_model(cfg.model, data_cfg).to(device),
                      memory_format(data_cfg.spatial_dims, cfg.trainer.channels_last))
    return dataset, model, build_loss(cfg.loss).to(device)


def _claim_and_train(run: RunDir, cfg: DictConfig, resolved: dict[str, Any], data_cfg: Any, device: torch.device,
                     ranks: Ranks) -> Path | None:
    set_determinism(seed=resolved["seed"])  # also cudnn.deterministic=True, cudnn.benchmark=False
    if resolved["trainer"]["cudnn_benchmark"]:
        set_cudnn_benchmark(True)
        if device.type != "cuda":
            log.warning("trainer.cudnn_benchmark=true has no effect on %s: cuDNN runs on CUDA only", device)
    built: list[Any] = []
    with ExitStack() as held:  # rank 0 holds the run's lock until the run ends (or fails)
        def build_and_claim() -> bool:  # rank 0 first: it writes synthetic / prepared data on first use
            built.extend(_build(cfg, data_cfg, device))
            check_test_split(cfg.data)  # a bad test case fails now, not after training
            held.enter_context(locked(run))  # a second process using this run stops here
            return claim(run, on_exists=resolved["on_exists"], resume=resolved["resume"])

        if not ranks.on_main(build_and_claim):
            return None
        dataset, model, loss_fn = built if ranks.is_main else _build(cfg, data_cfg, device)
        optimizer, scheduler = build_optimizer(model, resolved["optim"])
        log_handler = _attach_log_file(run.tmp / "train.log") if ranks.is_main else None
        try:
            return _train_in(run, cfg, resolved, data_cfg, dataset, model, loss_fn, optimizer, scheduler, device, ranks)
        finally:
            if log_handler is not None:
                logging.getLogger().removeHandler(log_handler)
                log_handler.close()


def _train_in(run: RunDir, cfg: DictConfig, resolved: dict[str, Any], data_cfg: Any, dataset: Any,
              model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: Any, device: torch.device, ranks: Ranks) -> Path:
    trainer, seed = resolved["trainer"], resolved["seed"]
    max_iters = trainer["max_iters"]
    iteration, train_time = 0, 0.0
    scaler = torch.amp.GradScaler(device.type, enabled=trainer["amp"] and trainer["amp_dtype"] == "float16")
    if resolved["resume"] and run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint, resolved)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {run.checkpoint} does not fit this model/optimizer ({err})") from err
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"])
        iteration, train_time = state["iteration"], state["train_time_s"]
        log.info("resumed %s at iteration %d", run.tmp, iteration)
    elif ranks.is_main:
        (run.tmp / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        provenance.write_json_atomic(run.tmp / "provenance.json", provenance.collect())
    iteration = ranks.same(iteration, "the start iteration", f"every rank must see {run.checkpoint} (a file system "
                           "shared by all nodes), or none")
    log.info("run %s: %s", resolved["name"], {k: resolved[k] for k in ("seed", "model", "optim", "trainer")})
    if ranks.enabled:
        log.info("data parallel over %d processes (%s): %d of the %d samples of each batch per process",
                 ranks.world_size, device.type, ranks.share(data_cfg.batch_size), data_cfg.batch_size)
    # DDP, then compile (what torch.compile's DDP support expects); ``net`` trains, ``model`` (unwrapped and
    # uncompiled, same parameters) is saved and evaluated
    net = compile_for_training(ranks.wrap(model, device), trainer["compile"])
    fmt = memory_format(data_cfg.spatial_dims, trainer["channels_last"])

    nonfinite, checked = torch.zeros((), dtype=torch.bool, device=device), iteration

    def check_finite() -> None:
        """At log and checkpoint iterations (one host sync there): FloatingPointError on every rank if any
        rank's loss was NaN/Inf since the last check, before anything is logged or saved."""
        nonlocal checked
        if ranks.any(bool(nonfinite)):
            raise FloatingPointError(f"the loss became NaN/Inf at one of iterations {checked + 1} to {iteration}: "
                                     "lower optim.lr or check the data; resume=true continues from the last checkpoint")
        checked = iteration

    def checkpoint() -> None:
        check_finite()
        if not ranks.is_main:
            return
        save_checkpoint(run.checkpoint, {
            "config": resolved, "iteration": iteration, "train_time_s": train_time,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_states(),
        })

    iters_per_epoch = trainer["iters_per_epoch"] or math.ceil(len(dataset) / data_cfg.batch_size)
    writer = None
    if trainer["tensorboard"] and ranks.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run.tmp / "tensorboard"), purge_step=iteration)
    curve = CurveLog(run.tmp / "curve.csv", resume_from=iteration) if ranks.is_main else None
    amp_dtype = getattr(torch, trainer["amp_dtype"])
    batches = _batches(dataset, data_cfg, seed, iteration, ranks, device)
    bar = tqdm(total=max_iters, initial=iteration, desc=resolved["name"],
               disable=not (trainer["progress_bar"] and ranks.is_main),
               dynamic_ncols=True)
    model.train()
    try:
        with stop_on_signals() as stop:
            while iteration < max_iters:
                started = time.perf_counter()
                loss_fn.set_epoch(iteration // iters_per_epoch)
                batch = next(batches)
                image = in_format(batch["image"].to(device, non_blocking=True), fmt)
                label = batch["label"].to(device, non_blocking=True)
                context = {k: batch[k].to(device, non_blocking=True) for k in ("offset", "full_shape") if k in batch}
                if ranks.enabled:  # each rank its own dropout masks, drawn from (seed, iteration, rank)
                    torch.manual_seed(derived_seed(seed, iteration, ranks.rank, 2))
                with torch.autocast(device.type, dtype=amp_dtype, enabled=trainer["amp"]):
                    output = net(image)
                loss = loss_fn(output.float(), label, **context)
                nonfinite = nonfinite | ~torch.isfinite(loss.detach())  # on the device: no host sync per step
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                iteration += 1
                train_time += time.perf_counter() - started
                bar.update(1)
                if iteration % trainer["log_every"] == 0:
                    check_finite()
                if iteration % trainer["log_every"] == 0 or iteration == max_iters:
                    parts = loss_fn.last_components if hasattr(loss_fn, "last_components") else {"total": loss.item()}
                    grads = {f"grad_{k}": v for k, v in loss_fn.gradient_norms(output.detach().float(), label,
                                                                               **context).items()} \
                        if hasattr(loss_fn, "gradient_norms") else {}
                    parts = ranks.mean({"loss": loss.item(), **parts, **grads})  # the global batch's values
                    loss_value = parts.pop("loss")
                    grads = {k: parts.pop(k) for k in grads}
                    shares = gradient_shares({k[len("grad_"):]: v for k, v in grads.items()})
                    lr = optimizer.param_groups[0]["lr"]
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2g}")
                    log.info("iteration %d/%d loss %.5f %s lr %.3g", iteration, max_iters, loss_value, parts, lr)
                    if curve is not None:
                        curve.append({"iteration": iteration, "lr": lr, "loss": loss_value, **parts, **grads, **shares})
                    if writer is not None:
                        for key, value in {**parts, **grads, **shares}.items():
                            writer.add_scalar(f"loss/{key}", value, iteration)
                        writer.add_scalar("lr", lr, iteration)
                if iteration % trainer["checkpoint_every"] == 0 or iteration == max_iters:
                    checkpoint()
                if ranks.any("signum" in stop):  # every rank stops after the same iteration
                    checkpoint()
                    stop.setdefault("signum", signal.SIGTERM)
                    name = signal.Signals(stop["signum"]).name
                    log.warning("%s at iteration %d: checkpoint saved; continue with resume=true", name, iteration)
                    raise RunInterrupted(stop["signum"], f"{name}: run interrupted at iteration {iteration}, "
                                         "resume=true continues it")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    log.info("training done: %d iterations in %.1f s", iteration, train_time)
    if ranks.is_main:
        evaluate_run(run, cfg, resolved, model, loss_fn, device, train_time)
        log.info("run complete: %s", complete(run))
    ranks.wait_for_main()
    return run.final


def evaluate_run(run: RunDir, cfg: DictConfig, resolved: dict[str, Any], model: torch.nn.Module,
                 loss_fn: torch.nn.Module, device: torch.device, train_time: float) -> None:
    """Evaluate on the test set and write ``summary.json`` + ``per_case.csv`` into the run folder."""
    model.eval()
    cases = load_test_cases(cfg.data)
    probabilities = getattr(loss_fn, "probabilities", None)
    with torch.no_grad():
        per_case = evaluate_model(model, cases, data_cfg=resolved["data"], eval_cfg=cfg.eval,
                                  probabilities_fn=probabilities, device=device,
                                  predictions_dir=run.tmp / "predictions")
    meta = {
        "experiment": resolved["name"], "seed": resolved["seed"], "dataset": resolved["data"]["name"],
        "source": resolved["data"]["source"], "structures": resolved["data"]["structures"],
        "convention": resolved["eval"]["convention"], "iterations": resolved["trainer"]["max_iters"],
        "protocol": resolved["protocol"]["name"], "input_downsample": resolved["data"].get("downsample"),
        "wall_time_s": round(train_time, 3), "case_ids": [str(c["id"]) for c in cases],
    }
    write_summary(run.tmp, per_case, meta)
    log_summary(run.tmp / "summary.json", log)


register()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except RunInterrupted as stop:
        print(f"rmseg-train: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)


def cli() -> None:
    """``rmseg-train``: :func:`main` on the command line as :func:`rmseg.config.sweep.sweep_arguments` fixes it."""
    try:
        sys.argv[1:] = sweep_arguments(sys.argv[1:])
    except ValueError as err:
        print(f"rmseg-train: {err}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    # `python -m rmseg.train` (the Makefile's): run the cli of the imported module, not of __main__, so that a
    # launcher pickling the task function (launcher=slurm, submitit) pickles rmseg.train.main by reference;
    # pickled by value from __main__ it drags in this module's globals, torch.backends among them (unpicklable)
    from rmseg.train import cli as _imported_cli

    _imported_cli()
