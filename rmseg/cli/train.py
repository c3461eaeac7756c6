"""rmseg-train: train one model, evaluate it on the test set, write its run folder.

    rmseg-train experiment=table1/rm20 seed=1            # or: python -m rmseg.cli.train ...
    rmseg-train -m experiment=table2/vnet,table2/rm4 seed=0,1,2
    rmseg-train experiment=table2/rm4 resume=true        # continue an interrupted run
    torchrun --nproc_per_node=N -m rmseg.cli.train ...   # one run data-parallel on N devices

Reads top to bottom: check the config (every bad input fails before a run folder exists,
``rmseg.config.checks``), claim the run folder (``results/runs/<name>/.seed<k>.tmp/`` under an fcntl lock,
renamed to ``seed<k>/`` when complete, ``rmseg.engine.run_dir``), build data, model and loss, resume from
the checkpoint if asked (``rmseg.engine.checkpoint``: weights, optimizer, scheduler, scaler, iteration and
every RNG state, so a resumed run ends bitwise where an uninterrupted one does), train
(``rmseg.engine.loop.Trainer``), evaluate on the test set and write ``summary.json`` / ``per_case.csv``
(``rmseg.evaluation``). Under torchrun (``rmseg.engine.distributed``) ``data.batch_size`` stays the global
batch and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hydra
import torch
from monai.utils import set_determinism
from omegaconf import DictConfig, OmegaConf

from rmseg.config import CONFIG_DIR, register
from rmseg.config.checks import check_config, pick_device
from rmseg.config.sweep import sweep_arguments
from rmseg.data import build_train_dataset, check_test_split
from rmseg.data.config import as_data_config
from rmseg.engine import provenance
from rmseg.engine.checkpoint import check_same_run, load_checkpoint, save_checkpoint
from rmseg.engine.curve import CurveLog
from rmseg.engine.distributed import Ranks
from rmseg.engine.loop import RunInterrupted, Trainer, build_loss, iters_per_epoch
from rmseg.engine.run_dir import RunDir, claim, complete, locked, log_file, run_dir
from rmseg.engine.sampling import train_batches
from rmseg.engine.speed import in_format, memory_format, process_settings, set_cudnn_benchmark
from rmseg.evaluation import evaluate_run_model, log_summary
from rmseg.models import build_model

log = logging.getLogger("rmseg.train")


def train(cfg: DictConfig) -> Path | None:
    """Train, evaluate and complete the run of ``cfg``; the final run folder, or None if skipped."""
    resolved = check_config(cfg)
    run = run_dir(resolved["paths"]["runs_dir"], resolved["name"], resolved["seed"])
    if run.final.exists() and resolved["on_exists"] == "skip":
        check_same_run(run.final, resolved)
        log.info("run %s is complete: skipped (on_exists=skip)", run.final)
        return None
    ranks = Ranks.from_env()
    ranks.share(cfg.data.batch_size)  # a global batch the ranks cannot share fails now
    device = ranks.device(cfg.trainer.device) if ranks.enabled else pick_device(cfg.trainer.device)
    with process_settings(resolved["trainer"]["num_threads"], quiet=not ranks.is_main):
        ranks.start(device)
        try:
            return _claim_and_train(run, cfg, resolved, device, ranks)
        finally:
            ranks.close()


def _build(cfg: DictConfig, device: torch.device) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    dataset = build_train_dataset(cfg.data)
    fmt = memory_format(cfg.data.spatial_dims, cfg.trainer.channels_last)
    return dataset, in_format(build_model(cfg.model, cfg.data).to(device), fmt), build_loss(cfg.loss).to(device)


def _claim_and_train(run: RunDir, cfg: DictConfig, resolved: dict[str, Any], device: torch.device,
                     ranks: Ranks) -> Path | None:
    set_determinism(seed=resolved["seed"])  # also cudnn.deterministic=True, cudnn.benchmark=False
    if resolved["trainer"]["cudnn_benchmark"]:
        set_cudnn_benchmark(True)
        if device.type != "cuda":
            log.warning("trainer.cudnn_benchmark=true has no effect on %s: cuDNN runs on CUDA only", device)
    built: list[Any] = []
    with ExitStack() as held:  # rank 0 holds the run's lock until the run ends (or fails)
        def build_and_claim() -> bool:  # rank 0 first: it writes synthetic / prepared data on first use
            built.extend(_build(cfg, device))
            check_test_split(cfg.data)  # a bad test case fails now, not after training
            held.enter_context(locked(run))  # a second process using this run stops here
            return claim(run, on_exists=resolved["on_exists"], resume=resolved["resume"])

        if not ranks.on_main(build_and_claim):
            return None
        dataset, model, loss_fn = built if ranks.is_main else _build(cfg, device)
        with log_file(run.tmp / "train.log" if ranks.is_main else None):
            return _train_in(run, cfg, resolved, dataset, model, loss_fn, device, ranks)


def _train_in(run: RunDir, cfg: DictConfig, resolved: dict[str, Any], dataset: Any, model: torch.nn.Module,
              loss_fn: torch.nn.Module, device: torch.device, ranks: Ranks) -> Path:
    trainer_cfg, data_cfg = resolved["trainer"], as_data_config(cfg.data)
    trainer = Trainer(model, loss_fn, resolved["optim"], trainer_cfg, device=device,
                      spatial_dims=data_cfg.spatial_dims, ranks=ranks, seed=resolved["seed"])
    if resolved["resume"] and run.checkpoint.exists():
        trainer.load_state_dict(load_checkpoint(run.checkpoint, resolved), f"checkpoint {run.checkpoint}")
        log.info("resumed %s at iteration %d", run.tmp, trainer.iteration)
    elif ranks.is_main:
        (run.tmp / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        provenance.write_json_atomic(run.tmp / "provenance.json", provenance.collect())
    start = ranks.same(trainer.iteration, "the start iteration", f"every rank must see {run.checkpoint} (a file "
                       "system shared by all nodes), or none")
    log.info("run %s: %s", resolved["name"], {k: resolved[k] for k in ("seed", "model", "optim", "trainer")})
    if ranks.enabled:
        log.info("data parallel over %d processes (%s): %d of the %d samples of each batch per process",
                 ranks.world_size, device.type, ranks.share(data_cfg.batch_size), data_cfg.batch_size)
    writer = None
    if trainer_cfg["tensorboard"] and ranks.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run.tmp / "tensorboard"), purge_step=start)
    curve = CurveLog(run.tmp / "curve.csv", resume_from=start) if ranks.is_main else None
    batches = train_batches(dataset, data_cfg.batch_size, data_cfg.num_workers, resolved["seed"], start, ranks, device)
    try:
        trainer.fit(batches, trainer_cfg, iters_per_epoch=iters_per_epoch(trainer_cfg, len(dataset), data_cfg.batch_size),
                    save=lambda state: save_checkpoint(run.checkpoint, {"config": resolved, **state}),
                    name=resolved["name"], curve=curve, writer=writer)
    finally:
        if writer is not None:
            writer.close()
    if ranks.is_main:  # the test set, into summary.json + per_case.csv
        log_summary(evaluate_run_model(model, resolved, run.tmp, eval_cfg=cfg.eval, device=device,
                                       iterations=resolved["trainer"]["max_iters"], train_time_s=trainer.train_time), log)
        log.info("run complete: %s", complete(run))
    ranks.wait_for_main()
    return run.final


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
    # `python -m rmseg.cli.train` (the Makefile's): run the cli of the imported module, not of __main__, so
    # that a launcher pickling the task function (launcher=slurm, submitit) pickles it by reference; pickled
    # by value from __main__ it drags in this module's globals, torch.backends among them (unpicklable)
    from rmseg.cli.train import cli as _imported_cli

    _imported_cli()
