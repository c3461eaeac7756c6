"""Training throughput of the paper's two settings, per precision / layout / compile variant.

Settings (the configs ``rmseg-train experiment=...`` runs):

- ``table1``: ``experiment=table1/rm20_02_22``: MONAI 2D U-Net, 512x512, 3 classes, CE + Dice + RM
  with 3 orders, SGD.
- ``table2``: ``experiment=table2/rm4``: rmseg's V-Net (Ma et al.), 112x112x80 patches, batch 4,
  CE + Dice + RM with 4 orders, SGD with weight decay.

Variants of the same step, each a set of the trainer's speed switches (``trainer.<switch>=true``, applied
by the trainer's own code: ``rmseg.engine.loop.Trainer``): ``fp32`` (none); ``amp_bf16`` (``trainer.amp``:
``torch.autocast`` in bfloat16, CPU or CUDA); ``channels_last`` (channels-last memory format for model and
input); ``cudnn_benchmark`` (cuDNN autotuning, CUDA only; the other variants run cuDNN deterministic, as
the trainer does); ``compile`` (``torch.compile`` of the network); ``amp_bf16_channels_last`` (both).
Every variant starts from the same weights and sees the same synthetic batches, so its loss curve over
the short run is compared with the fp32 curve (largest relative difference, with a tolerance per variant).
The fastest variant whose curve matches is the setting to write into ``configs/trainer/{gs,la}.yaml``.

Data wait: the real loader (``rmseg.data.build_train_dataset`` on the synthetic stand-ins, in a
``torch.utils.data.DataLoader`` with the config's batch size and workers) feeds the fp32 step and the
time spent blocked in ``next(loader)`` before each step is recorded.

Run ``python -m benchmarks.training [--quick | --full]``; writes ``results/benchmarks/training.{md,json}``.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from benchmarks.common import bench_parser, markdown_table, pick_device, summarize, synchronize, write_report
from rmseg.config.compose import compose_config
from rmseg.models import build_model
from rmseg.engine.loop import Trainer, build_loss
from rmseg.engine.speed import in_format, memory_format, set_cudnn_benchmark

SETTINGS = {"table1": "table1/rm20_02_22", "table2": "table2/rm4"}
# The trainer switches (trainer.<name>=true) each variant turns on; amp in bfloat16.
VARIANTS = {
    "fp32": (),
    "amp_bf16": ("amp",),
    "channels_last": ("channels_last",),
    "cudnn_benchmark": ("cudnn_benchmark",),
    "compile": ("compile",),
    "amp_bf16_channels_last": ("amp", "channels_last"),
}
# Largest relative loss difference to the fp32 curve that still counts as "the same curve".
CURVE_TOLERANCE = {"fp32": 0.0, "amp_bf16": 0.05, "channels_last": 1e-3, "cudnn_benchmark": 1e-3, "compile": 1e-3,
                   "amp_bf16_channels_last": 0.05}


def setting_config(setting: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    """The composed run config of ``setting`` (``table1`` | ``table2``) with extra Hydra overrides."""
    if setting not in SETTINGS:
        raise ValueError(f"setting={setting!r} is unknown: use one of {sorted(SETTINGS)}")
    return compose_config([f"experiment={SETTINGS[setting]}", *overrides])


def spatial_shape(cfg: DictConfig) -> tuple[int, ...]:
    """Training input size of a data config: ``image_size`` (2D) or ``patch_size`` (3D)."""
    size = cfg.data.get("image_size") if cfg.data.spatial_dims == 2 else cfg.data.get("patch_size")
    if size is None:
        raise ValueError(f"data config {cfg.data.name!r} gives no image_size/patch_size")
    size = list(size) if OmegaConf.is_list(size) or isinstance(size, (list, tuple)) else [size] * cfg.data.spatial_dims
    return tuple(int(s) for s in size)


def synthetic_batches(
    cfg: DictConfig, shape: tuple[int, ...], batch_size: int, count: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """``count`` reproducible batches: a smoothed noise image and labels from its quantiles, so the
    network has something learnable; keys as the training samples (``image``, ``label``, ``offset``,
    ``full_shape``)."""
    gen = torch.Generator().manual_seed(seed)
    ndim = len(shape)
    pool = nn.functional.avg_pool2d if ndim == 2 else nn.functional.avg_pool3d
    batches = []
    for _ in range(count):
        image = torch.randn(batch_size, cfg.data.in_channels, *shape, generator=gen)
        image = pool(image, kernel_size=9, stride=1, padding=4) * 3.0
        levels = torch.quantile(image[:, :1].flatten(1)[:, ::97], torch.linspace(0.5, 0.9, cfg.data.num_classes - 1), dim=1)
        label = torch.zeros(batch_size, 1, *shape, dtype=torch.long)
        for level in levels:
            label += (image[:, :1] > level.view(-1, *[1] * (ndim + 1))).long()
        batches.append(
            {
                "image": image,
                "label": label,
                "offset": torch.zeros(batch_size, ndim, dtype=torch.long),
                "full_shape": torch.tensor([shape] * batch_size),
            }
        )
    return batches


class TrainStep:
    """One SGD iteration of rmseg's training objective: ``rmseg.engine.loop.Trainer.step``, the step
    ``rmseg-train`` runs (forward under autocast, loss in float32, backward, optimizer and schedule step).

    Built as the trainer builds it: network from ``build_model(cfg.model, cfg.data)``, loss and SGD + step
    schedule from ``rmseg.engine.loop.build_loss`` / ``build_optimizer``, the variant's speed switches
    applied by ``rmseg.engine.speed``; autocast in bfloat16.
    """

    def __init__(self, cfg: DictConfig, variant: str, device: torch.device, state: dict[str, Any] | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is unknown: use one of {list(VARIANTS)}")
        switches = VARIANTS[variant]
        if "cudnn_benchmark" in switches and device.type != "cuda":
            raise ValueError(f"variant {variant!r} needs CUDA; it does not apply on CPU")
        self.device = device
        self.variant = variant
        set_cudnn_benchmark("cudnn_benchmark" in switches)
        trainer = {"amp": "amp" in switches, "amp_dtype": "bfloat16", "channels_last": "channels_last" in switches,
                   "compile": "compile" in switches}
        model = build_model(cfg.model, cfg.data)
        if state is not None:
            model.load_state_dict(state)
        model = in_format(model.to(device), memory_format(cfg.data.spatial_dims, trainer["channels_last"])).train()
        self.trainer = Trainer(model, build_loss(cfg.loss).to(device), cfg.optim, trainer, device=device,
                               spatial_dims=cfg.data.spatial_dims)
        self.model = model
        self.autocast, self.memory_format = trainer["amp"], self.trainer.format

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run one iteration on ``batch``; returns the loss (a detached scalar tensor, not synchronised)."""
        return self.trainer.step(batch).loss


def run_variant(
    cfg: DictConfig,
    variant: str,
    batches: list[dict[str, torch.Tensor]],
    steps: int,
    warmup: int,
    device: torch.device,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Time ``steps`` iterations (the first ``warmup`` untimed) of one variant from weights ``state``."""
    torch.manual_seed(0)
    step = TrainStep(cfg, variant, device, copy.deepcopy(state))
    if "compile" in VARIANTS[variant]:  # the first two calls compile (forward, then backward/guards): one extra untimed
        warmup, steps = warmup + 1, steps + 1
    times, losses = [], []
    for i in range(steps):
        synchronize(device)
        start = time.perf_counter()
        loss = step(batches[i % len(batches)])
        synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    stats = summarize(times[warmup:])
    return {
        "variant": variant,
        "first_step_s": times[0],
        **stats,
        "it_per_s": 1.0 / stats["median_s"],
        "losses": losses,
    }


SYNTHETIC_DATA = {
    # The release's image size, prepared at the experiment's 512x512 (the stand-in's default is 256).
    "table1": ("data=gs_synthetic", "data.image_size=[512,512]", "data.synthetic.shape=[1024,880]"),
    "table2": ("data=la_synthetic", "data.synthetic.shape=[192,144,88]"),  # a mid-sized LA volume
}


def measure_data_wait(
    setting: str, overrides: tuple[str, ...], steps: int, device: torch.device
) -> dict[str, Any]:
    """Time blocked in ``next(loader)`` before each of ``steps`` fp32 iterations fed by rmseg's real
    loader (``rmseg.data.build_train_dataset`` in a DataLoader with the config's batch size and
    workers) on the synthetic stand-ins, written and prepared in a temporary folder."""
    from torch.utils.data import DataLoader

    from rmseg.data import build_train_dataset

    with tempfile.TemporaryDirectory(prefix="rmseg-bench-") as tmp:
        data_overrides = SYNTHETIC_DATA[setting] if not overrides else SYNTHETIC_DATA[setting][:1]
        cfg = setting_config(setting, (*data_overrides, *overrides, f"paths.data_dir={tmp}"))
        dataset = build_train_dataset(cfg.data)
        loader = DataLoader(
            dataset,
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
        )
        step = TrainStep(cfg, "fp32", device)
        waits, computes = [], []
        it: Iterator = iter(_cycle(loader))
        for _ in range(steps + 1):
            start = time.perf_counter()
            batch = next(it)
            waited = time.perf_counter() - start
            start = time.perf_counter()
            step(batch)
            synchronize(device)
            waits.append(waited)
            computes.append(time.perf_counter() - start)
    waits, computes = waits[1:], computes[1:]  # the first fetch starts the workers
    wait, compute = summarize(waits), summarize(computes)
    return {
        "num_workers": int(cfg.data.num_workers),
        "batch_size": int(cfg.data.batch_size),
        "steps": steps,
        "wait_median_s": wait["median_s"],
        "wait_max_s": wait["max_s"],
        "step_median_s": compute["median_s"],
        "wait_fraction": sum(waits) / (sum(waits) + sum(computes)),
    }


def _cycle(loader: Any) -> Iterator:
    while True:
        yield from loader


def benchmark_setting(
    setting: str,
    variants: tuple[str, ...],
    steps: int,
    warmup: int,
    device: torch.device,
    overrides: tuple[str, ...] = (),
    data_wait_steps: int = 0,
) -> dict[str, Any]:
    """All ``variants`` of one setting side by side, with the loss-curve check against fp32."""
    if steps <= warmup:
        raise ValueError(f"steps={steps} must exceed warmup={warmup} so that some steps are timed")
    cfg = setting_config(setting, overrides)
    shape = spatial_shape(cfg)
    torch.manual_seed(0)
    state = build_model(cfg.model, cfg.data).state_dict()
    batches = synthetic_batches(cfg, shape, int(cfg.data.batch_size), count=min(steps, 4), seed=0)
    rows = [run_variant(cfg, "fp32", batches, steps, warmup, device, state)]  # the reference: must run
    skipped = {}
    for variant in [v for v in variants if v != "fp32"]:
        if "cudnn_benchmark" in VARIANTS[variant] and device.type != "cuda":
            skipped[variant] = "CUDA only"
            continue
        try:
            rows.append(run_variant(cfg, variant, batches, steps, warmup, device, state))
        except Exception as exc:  # noqa: BLE001 - a variant the platform cannot run is reported, not fatal
            skipped[variant] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    reference = rows[0]["losses"]
    for row in rows:
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(row["losses"][:steps], reference))
        row["curve_max_rel_diff"] = diff
        row["curve_tolerance"] = CURVE_TOLERANCE[row["variant"]]
        row["curve_matches"] = diff <= CURVE_TOLERANCE[row["variant"]]
        row["speedup_vs_fp32"] = rows[0]["median_s"] / row["median_s"]
    result = {
        "setting": setting,
        "experiment": SETTINGS[setting],
        "model": str(cfg.model.name),
        "input_shape": [int(cfg.data.batch_size), int(cfg.data.in_channels), *shape],
        "num_classes": int(cfg.data.num_classes),
        "steps": steps,
        "warmup": warmup,
        "overrides": list(overrides),
        "variants": rows,
        "skipped": skipped,
    }
    if data_wait_steps:
        try:
            result["data_wait"] = measure_data_wait(setting, overrides, data_wait_steps, device)
        except Exception as exc:  # noqa: BLE001 - reported in the table instead of losing the other figures
            result["data_wait"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return result


def to_markdown(results: list[dict[str, Any]], device: torch.device) -> str:
    lines = [
        "# Training throughput",
        "",
        "One SGD iteration of rmseg's objective (forward, CE + Dice + RM, backward, step), per variant, "
        "from the same weights on the same synthetic batches. `median_s` over the timed steps (first "
        "`warmup` steps untimed; `first_step_s` includes compilation). Curve: largest relative difference "
        "of the loss to fp32 over the run.",
        "",
    ]
    if device.type != "cuda":
        lines += [
            "**GPU: not measured** (no CUDA device on the benchmark machine). The same script runs on CUDA "
            "unchanged (`python -m benchmarks.training`). CPU ranks of the variants say nothing about their "
            "GPU ranks (on CPU, bf16 gains hinge on AVX-512-BF16/AMX units: see `cpu_bf16` in the JSON), "
            "so no GPU default can be chosen from these figures.",
            "",
        ]
    for r in results:
        lines += [f"## {r['setting']}: `experiment={r['experiment']}`, model `{r['model']}`, input {r['input_shape']}", ""]
        lines += [f"{r['steps']} steps per variant, {r['warmup']} untimed.", ""]
        lines.append(
            markdown_table(
                r["variants"],
                ["variant", "median_s", "it_per_s", "speedup_vs_fp32", "first_step_s", "curve_max_rel_diff", "curve_matches"],
            )
        )
        for variant, why in r["skipped"].items():
            lines.append(f"\n- `{variant}` not run: {why}")
        wait = r.get("data_wait")
        if wait is not None:
            if "error" in wait:
                lines.append(f"\nData wait: not measured ({wait['error']}).")
            else:
                lines.append(
                    f"\nData wait with rmseg's loader (synthetic stand-ins, batch {wait['batch_size']}, "
                    f"{wait['num_workers']} workers, {wait['steps']} steps): median {wait['wait_median_s']:.4g} s, "
                    f"max {wait['wait_max_s']:.4g} s per step against a {wait['step_median_s']:.4g} s step "
                    f"({100 * wait['wait_fraction']:.1f}% of the time waiting)."
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    results = []
    for setting in args.settings:
        overrides: tuple[str, ...] = ()
        variants = args.variants or list(VARIANTS)
        if args.quick:  # smoke run: tiny inputs, no compilation
            size = "data.image_size=[64,64]" if setting == "table1" else "data.patch_size=[32,32,32]"
            overrides = (size, "data.batch_size=2")
            variants = [v for v in variants if v != "compile"]
            steps, warmup, wait_steps = 3, 1, 2
        elif device.type == "cuda":
            steps, warmup, wait_steps = (40, 10, 40) if args.full else (20, 5, 20)
        elif args.full:
            steps, warmup, wait_steps = 8, 2, 6
        elif setting == "table1":
            steps, warmup, wait_steps = 4, 1, 3
        else:
            # A V-Net step on 4x112x112x80 takes tens of seconds on a few CPU cores: fewest steps,
            # and no torch.compile (minutes of compilation) unless --full or asked for by --variants.
            variants = [v for v in variants if v != "compile"] if args.variants is None else variants
            steps, warmup, wait_steps = 3, 1, 2
        if args.repeats is not None:
            steps = warmup + args.repeats
        results.append(
            benchmark_setting(setting, tuple(variants), steps, warmup, device, overrides, data_wait_steps=wait_steps)
        )
        print(f"{setting}: done", flush=True)
    markdown = to_markdown(results, device)
    write_report("training", markdown, {"device": str(device), "quick": args.quick, "settings": results},
                 device=device, out_dir=args.out_dir)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
