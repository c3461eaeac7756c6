"""Training-loader throughput: samples per second, cached (MONAI CacheDataset) vs uncached.

One epoch = every training case once through ``build_train_dataset(cfg)`` and a torch DataLoader
(``num_workers=0``, the config's batch size), as the trainer reads it. Datasets: the synthetic
stand-ins always; the real Drishti-GS (512x512, prepared once into data/prepared/) and LA (16 cases,
112x112x80 patches) when present (``--real-root``, default $RMSEG_DATA_ROOT or ../shared/data).
For LA, a third row runs the same draws with MONAI's RandRotate90d / RandFlipd, which copy the whole
cached volume per sample (CacheDataset's copy, then each rotation and flip), where rmseg's pipeline
takes views and copies only the patch.

    python -m benchmarks.data [--quick] [--real-root DIR]
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch
from monai.data import CacheDataset
from monai.transforms import CastToTyped, Compose, EnsureTyped, RandFlipd, RandRotate90d

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, summarize, time_call, write_report
from rmseg.config.compose import compose_config
from rmseg.data import build_train_dataset, la, prepare
from rmseg.data.transforms import KEYS, LoadH5d, RandCropWithOffsetd


def epoch(dataset, batch_size: int) -> int:
    seen = 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0):
        seen += batch["image"].shape[0]
    return seen


def monai_copies_la_dataset(cfg) -> CacheDataset:
    """LA training samples as rmseg's pipeline draws them, with MONAI's copying rotation and flips."""
    transform = Compose([
        LoadH5d(),
        EnsureTyped(KEYS, data_type="tensor", track_meta=False),
        CastToTyped("label", dtype=torch.int64),
        RandRotate90d(KEYS, prob=1.0, max_k=4, spatial_axes=(0, 1)),
        RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        RandFlipd(KEYS, prob=0.5, spatial_axis=1),
        RandCropWithOffsetd(cfg.patch_size),
    ])
    transform.set_random_state(seed=cfg.seed)
    with warnings.catch_warnings():  # EnsureTyped on LoadH5d's read-only arrays: the cache is never written
        warnings.simplefilter("ignore", UserWarning)
        return CacheDataset(la.split_cases(prepare(cfg), "train", cfg.num_train), transform, progress=False)


def measure(label: str, overrides: list[str], repeats: int) -> list[dict]:
    rows = []
    is_la = compose_config(["name=bench", *overrides]).data.name == "la"
    for cache, pipeline in [(True, "rmseg"), (False, "rmseg")] + ([(True, "monai_copies")] if is_la else []):
        cfg = compose_config(["name=bench", *overrides, f"data.cache={cache}"]).data
        start = time.perf_counter()
        prepare(cfg)  # writes synthetic files / prepared folder on first use; untimed below
        ready_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = build_train_dataset(cfg) if pipeline == "rmseg" else monai_copies_la_dataset(cfg)
        build_s = time.perf_counter() - start
        n = len(dataset)
        stats = summarize(time_call(lambda: epoch(dataset, cfg.batch_size), repeats=repeats, warmup=1))
        sample = dataset[0]
        rows.append({
            "dataset": label,
            "pipeline": pipeline,
            "cache": cache,
            "cases": n,
            "sample_shape": "x".join(map(str, sample["image"].shape)),
            "build_s": build_s,
            "epoch_median_s": stats["median_s"],
            "samples_per_s": n / stats["median_s"],
            "first_use_s": ready_s,
            "repeats": stats["repeats"],
        })
    cached, uncached = rows[:2]
    for row in (cached, *rows[2:]):
        row["speedup_vs_uncached"] = row["samples_per_s"] / uncached["samples_per_s"]
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
    columns = ["dataset", "pipeline", "cache", "cases", "sample_shape", "samples_per_s", "epoch_median_s", "build_s",
               "speedup_vs_uncached", "repeats"]
    markdown = (
        "# Training-loader throughput (CPU)\n\n"
        "Samples per second over one epoch (every training case once) through `build_train_dataset` and a "
        "DataLoader with `num_workers=0` and the config's batch size; median of the repeats after one warm-up "
        "epoch, cached and uncached measured side by side in one process. `build_s`: constructing the "
        "dataset (with the cache: reading every case once). Drishti-GS is read from prepared 512x512 PNGs "
        "(no augmentation, the paper's setting: everything is cached); LA from UA-MT h5 files (gzip), then "
        "random axial rotation/flips and a 112x112x80 crop (padded when smaller) per sample. Pipeline `rmseg`: "
        "the trainer's (LA: rotation and flips as views of the cached volume, only the patch copied); "
        "`monai_copies`: the same draws with MONAI's RandRotate90d/RandFlipd on a copy of the cached volume.\n\n"
        + markdown_table(rows, columns)
    )
    write_report("data" if not args.quick else "data_quick", markdown, {"rows": rows}, out_dir=args.out_dir)
    print(markdown)


if __name__ == "__main__":
    main()
