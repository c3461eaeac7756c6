"""Training-loader throughput: samples per second, cached (MONAI CacheDataset) vs uncached.

One epoch = every training case once through ``build_train_dataset(cfg)`` and a torch DataLoader
(``num_workers=0``, the config's batch size), as the trainer reads it. Datasets: the synthetic
stand-ins always; the real Drishti-GS (512x512, prepared once into data/prepared/) and LA (16 cases,
112x112x80 patches) when present (``--real-root``, default $RMSEG_DATA_ROOT or ../shared/data).

    python -m benchmarks.data [--quick] [--real-root DIR]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, summarize, time_call, write_report
from rmseg.config.compose import compose_config
from rmseg.data import build_train_dataset, prepare


def epoch(dataset, batch_size: int) -> int:
    seen = 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0):
        seen += batch["image"].shape[0]
    return seen


def measure(label: str, overrides: list[str], repeats: int) -> list[dict]:
    rows = []
    for cache in (True, False):
        cfg = compose_config(["name=bench", *overrides, f"data.cache={cache}"]).data
        start = time.perf_counter()
        prepare(cfg)  # writes synthetic files / prepared folder on first use; untimed below
        ready_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = build_train_dataset(cfg)
        build_s = time.perf_counter() - start
        n = len(dataset)
        stats = summarize(time_call(lambda: epoch(dataset, cfg.batch_size), repeats=repeats, warmup=1))
        sample = dataset[0]
        rows.append({
            "dataset": label,
            "cache": cache,
            "cases": n,
            "sample_shape": "x".join(map(str, sample["image"].shape)),
            "build_s": build_s,
            "epoch_median_s": stats["median_s"],
            "samples_per_s": n / stats["median_s"],
            "first_use_s": ready_s,
            "repeats": stats["repeats"],
        })
    cached, uncached = rows
    cached["speedup_vs_uncached"] = cached["samples_per_s"] / uncached["samples_per_s"]
    return rows


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--real-root", type=Path, default=Path(os.environ.get("RMSEG_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    suites = [
        ("Drishti-GS synthetic (12 train)", ["data=gs_synthetic", "data.image_size=[512,512]"]),
        ("LA synthetic (8 train)", ["data=la_synthetic"]),
    ]
    if (args.real_root / "drishti-gs1").is_dir() and not args.quick:
        suites.append(("Drishti-GS real (50 train)", ["data=gs", f"data.root={args.real_root / 'drishti-gs1'}"]))
    if (args.real_root / "la2018").is_dir() and not args.quick:
        suites.append(("LA real (16 train)", ["data=la", f"data.root={args.real_root / 'la2018'}"]))
    rows = [row for label, overrides in suites for row in measure(label, overrides, repeats)]
    columns = ["dataset", "cache", "cases", "sample_shape", "samples_per_s", "epoch_median_s", "build_s",
               "speedup_vs_uncached", "repeats"]
    markdown = (
        "# Training-loader throughput (CPU)\n\n"
        "Samples per second over one epoch (every training case once) through `build_train_dataset` and a "
        "DataLoader with `num_workers=0` and the config's batch size; median of the repeats after one warm-up "
        "epoch, cached and uncached measured side by side in one process. `build_s`: constructing the "
        "dataset (with the cache: reading every case once). Drishti-GS is read from prepared 512x512 PNGs "
        "(no augmentation, the paper's setting: everything is cached); LA from UA-MT h5 files (gzip), then "
        "random axial rotation/flips and a 112x112x80 crop (padded when smaller) per sample.\n\n"
        + markdown_table(rows, columns)
    )
    write_report("data" if not args.quick else "data_quick", markdown, {"rows": rows}, out_dir=args.out_dir)
    print(markdown)


if __name__ == "__main__":
    main()
