"""Before a long sweep: the device, the protocol, the runs still to do and their estimated duration.

    python -m rmseg.cli.preflight experiment=table2/rm4,table2/vnet seed=0,1,2 protocol=paper [any override]

Takes the overrides of ``rmseg-train --multirun`` (comma lists and ``glob(...)`` are expanded; other
sweep forms are taken as one value). Each row still to do (its run folder not complete) is timed for
:data:`TIMED_STEPS` training steps (forward, loss, backward, SGD) on random input of its batch's shape on
the device it would train on, after one warm-up step; the estimate is that time per step times its
``trainer.max_iters``, summed over rows and seeds. Data loading, evaluation and start-up are not in it.
Warns when the ``paper`` protocol would run on a CPU. Never writes anything.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep

from rmseg.config.compose import compose_config
from rmseg.config.sweep import sweep_arguments

TIMED_STEPS = 2


def expand(args: Sequence[str]) -> list[list[str]]:
    """The override lists of the sweep's jobs (comma lists crossed, as Hydra's basic sweeper does)."""
    parser = OverridesParser.create()
    axes = []
    for arg in sweep_arguments([a for a in args if not a.startswith("-")]):
        value = parser.parse_override(arg).value()
        key = arg.split("=", 1)[0]
        axes.append([f"{key}={v}" for v in value.list] if isinstance(value, ChoiceSweep) else [arg])
    return [list(job) for job in itertools.product(*axes)]


def seconds_per_step(cfg, device: torch.device) -> float:
    """Mean wall time of :data:`TIMED_STEPS` training steps (``rmseg.engine.loop.Trainer.step``, the step
    rmseg-train runs, with the config's autocast) of ``cfg``'s model and loss on random input."""
    from rmseg.data.config import as_data_config
    from rmseg.data.resample import factors_of
    from rmseg.engine.loop import Trainer, build_loss
    from rmseg.models import build_model

    data = as_data_config(cfg.data)
    shape = list(data.image_size if data.spatial_dims == 2 else data.patch_size)
    shape = [s // f for s, f in zip(shape, factors_of(data.downsample, data.spatial_dims))]
    settings = {"amp": cfg.trainer.amp, "amp_dtype": cfg.trainer.amp_dtype, "channels_last": False, "compile": False}
    trainer = Trainer(build_model(cfg.model, data).to(device), build_loss(cfg.loss).to(device), cfg.optim, settings,
                      device=device, spatial_dims=data.spatial_dims)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(data.batch_size, data.in_channels, *shape, generator=generator),
             "label": torch.randint(0, data.num_classes, (data.batch_size, 1, *shape), generator=generator),
             "offset": torch.zeros(data.batch_size, len(shape), dtype=torch.int64),
             "full_shape": torch.tensor([shape] * data.batch_size, dtype=torch.int64)}
    times = []
    for _ in range(TIMED_STEPS + 1):
        started = time.perf_counter()
        trainer.step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return sum(times[1:]) / TIMED_STEPS


def duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def report(args: Sequence[str]) -> list[str]:
    """The lines printed by :func:`main` (also the warning, prefixed ``WARNING:``)."""
    from rmseg.engine.run_dir import run_dir
    from rmseg.config.checks import pick_device

    jobs = [compose_config(job) for job in expand(args)]
    device = pick_device(jobs[0].trainer.device)
    protocols = sorted({str(cfg.protocol.name) for cfg in jobs})
    todo = [cfg for cfg in jobs if not run_dir(cfg.paths.runs_dir, cfg.name, cfg.seed).final.exists()]
    rates: dict[str, float] = {}
    for cfg in todo:
        if cfg.name not in rates:
            rates[cfg.name] = seconds_per_step(cfg, device)
    total = sum(rates[cfg.name] * cfg.trainer.max_iters for cfg in todo)
    lines = [f"device: {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}",
             f"protocol: {', '.join(protocols)}",
             f"runs: {len(todo)} to train of {len(jobs)} ({len(jobs) - len(todo)} complete)"]
    lines += [f"  {name}: {rate:.3g} s per iteration" for name, rate in sorted(rates.items())]
    lines.append(f"estimated training time: {duration(total)} (timed steps on random input; data loading and "
                 "evaluation not included)")
    if device.type == "cpu" and "paper" in protocols and todo:
        lines.append("WARNING: the paper protocol is starting on a CPU; on a GPU it takes a small fraction of this. "
                     "PROTOCOL=cpu (or small) is sized for a CPU")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        lines = report(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"rmseg-preflight: {err}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
