"""How the cost of a training iteration grows with the input size, for the U-Net and the V-Net.

One fp32 iteration of rmseg's objective (``benchmarks.training.TrainStep``: forward, CE + Dice + RM,
backward, SGD step) of the Table 1 setting (2D U-Net, square images 128..1024) and the Table 2
setting (V-Net, cubic patches 64..160), batch 1 so the largest sizes fit. Per size: peak memory of the
first iteration (``benchmarks.common.peak_memory_bytes``: CUDA allocator peak, or sampled resident set
on CPU), one more untimed iteration, then the median time of the next iterations.

Run ``python -m benchmarks.scaling [--quick | --full]``; writes ``results/benchmarks/scaling.{md,json}``
and ``scaling.png``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    bench_parser,
    markdown_table,
    peak_memory_bytes,
    pick_device,
    summarize,
    time_call,
    write_report,
)
from benchmarks.training import TrainStep, setting_config, synthetic_batches  # noqa: E402

SIZES = {"table1": (128, 256, 512, 1024), "table2": (64, 96, 128, 160)}


def benchmark_sizes(
    setting: str, sizes: tuple[int, ...], repeats: int, device: torch.device, overrides: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Time per iteration and peak memory of one setting (plus Hydra ``overrides``) at each (square /
    cubic) size, batch 1."""
    rows = []
    for size in sizes:
        ndim = 2 if setting == "table1" else 3
        key = "image_size" if ndim == 2 else "patch_size"
        cfg = setting_config(setting, (f"data.{key}=[{','.join([str(size)] * ndim)}]", "data.batch_size=1", *overrides))
        torch.manual_seed(0)
        step = TrainStep(cfg, "fp32", device)
        batch = synthetic_batches(cfg, (size,) * ndim, 1, count=1, seed=0)[0]
        peak = peak_memory_bytes(lambda: step(batch), device)
        stats = summarize(time_call(lambda: step(batch), repeats=repeats, warmup=1, device=device))
        rows.append(
            {
                "setting": setting,
                "model": str(cfg.model.name),
                "size": size,
                "voxels": size**ndim,
                **stats,
                "peak_memory_mib": peak / 2**20,
            }
        )
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["median_s"] / base["median_s"]
        r["voxel_ratio"] = r["voxels"] / base["voxels"]
    return rows


def plot(rows: list[dict[str, Any]], path: Path, device: torch.device) -> None:
    """Time per iteration and peak memory against voxels per sample (log-log), one line per model;
    written to a temporary name and renamed when complete (an earlier plot goes to ``archive/``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for setting in dict.fromkeys(r["setting"] for r in rows):
        sel = [r for r in rows if r["setting"] == setting]
        label = f"{setting} ({sel[0]['model']}, {'2D' if setting == 'table1' else '3D'})"
        x = [r["voxels"] for r in sel]
        axes[0].plot(x, [r["median_s"] for r in sel], "o-", label=label)
        axes[1].plot(x, [r["peak_memory_mib"] for r in sel], "o-", label=label)
        for r in sel:
            axes[0].annotate(str(r["size"]), (r["voxels"], r["median_s"]), fontsize=7)
    for ax, ylabel in zip(axes, ("seconds per iteration (batch 1)", "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels / voxels per sample")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rmseg training iteration cost on {device.type}", fontsize=10)
    fig.tight_layout()
    if path.exists():  # keep an earlier run's plot, as write_report keeps its tables
        archive = path.parent / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(path.stat().st_mtime))
        os.replace(path, archive / f"{path.stem}.{stamp}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def to_markdown(rows: list[dict[str, Any]], device: torch.device) -> str:
    memory = "CUDA allocator peak" if device.type == "cuda" else "peak resident set above the start, sampled every ms"
    lines = [
        "# Cost against input size",
        "",
        f"One fp32 training iteration (batch 1), median of {rows[0]['repeats']} after two untimed iterations "
        f"(the first gives the memory column: {memory}). Plot: `scaling.png`.",
        "",
    ]
    if device.type != "cuda":
        lines += ["**GPU: not measured** (no CUDA device on the benchmark machine).", ""]
    lines.append(
        markdown_table(rows, ["setting", "model", "size", "voxels", "median_s", "time_ratio", "voxel_ratio", "peak_memory_mib"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    sizes = {"table1": (32, 64), "table2": (32, 48)} if args.quick else SIZES
    if args.full:
        sizes = {"table1": (128, 256, 384, 512, 768, 1024), "table2": (64, 80, 96, 112, 128, 144, 160)}
    repeats = args.repeats or (5 if args.full else 2)
    rows = [r for setting, s in sizes.items() for r in benchmark_sizes(setting, s, repeats, device)]
    markdown = to_markdown(rows, device)
    out = Path(args.out_dir)
    write_report("scaling", markdown, {"device": str(device), "quick": args.quick, "rows": rows},
                 device=device, out_dir=out)
    plot(rows, out / "scaling.png", device)
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
