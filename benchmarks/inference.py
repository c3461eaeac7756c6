"""Sliding-window inference time of one LA-sized volume with rmseg's evaluation code path.

``rmseg.evaluation.predict_probabilities`` on rmseg's V-Net (``model=vnet3d``, 2 classes) at the
protocol's window 112x112x80 and strides 18 in-plane, 4 in depth (UA-MT / Ma et al.), for several
``sw_batch_size`` values, in fp32 and with AMP (``eval.amp``: autocast, bfloat16 on CPU, float16 on
CUDA), each also in channels-last memory format (``eval.channels_last``). Weights are random: the time
does not depend on them.

LA volumes range from 148x132x88 to 244x160x88 (27 to 108 windows at these strides). The default
volume is 244x160x88 (the largest); on CPU without ``--full`` it is 148x132x88 (the smallest), since
one window takes seconds there.

Run ``python -m benchmarks.inference [--quick | --full]``; writes ``results/benchmarks/inference.{md,json}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import bench_parser, markdown_table, pick_device, summarize, time_call, write_report
from benchmarks.training import setting_config
from rmseg.evaluation import EvalConfig, predict_probabilities
from rmseg.models import build_model

LA_LARGEST = (244, 160, 88)
LA_SMALLEST = (148, 132, 88)
ROI = (112, 112, 80)
STRIDES = (18, 18, 4)


def window_count(shape: Sequence[int], roi: Sequence[int], strides: Sequence[int]) -> int:
    """Windows the protocol's sliding window visits: per axis ``ceil((size - roi) / stride) + 1``
    (one window where the volume is no larger than the roi)."""
    if not len(shape) == len(roi) == len(strides):
        raise ValueError(f"shape {list(shape)}, roi {list(roi)} and strides {list(strides)} differ in length")
    return math.prod(max(math.ceil((s - r) / t), 0) + 1 for s, r, t in zip(shape, roi, strides))


def benchmark_volume(
    shape: Sequence[int],
    settings: Sequence[tuple[int, bool, bool]],
    repeats: int,
    device: torch.device,
    roi: Sequence[int] = ROI,
    strides: Sequence[int] = STRIDES,
    overrides: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Seconds per volume of ``shape`` for every ``(sw_batch_size, amp, channels_last)`` of ``settings``,
    side by side, with the network of the Table 2 setting (plus Hydra ``overrides``)."""
    if not settings or any(len(s) != 3 or s[0] < 1 for s in settings):
        raise ValueError(
            f"settings {list(settings)} must be a non-empty list of (sw_batch_size >= 1, amp, channels_last)"
        )
    torch.manual_seed(0)
    cfg = setting_config("table2", overrides)
    model = build_model(cfg.model, cfg.data).to(device)
    image = torch.randn(1, *shape)
    windows = window_count(shape, roi, strides)
    rows = []
    for sw, amp, channels_last in settings:
        model.to(memory_format=torch.contiguous_format)  # predict_probabilities sets channels-last in place
        cfg = EvalConfig(roi_size=list(roi), strides=list(strides), sw_batch_size=sw, amp=amp,
                         channels_last=channels_last)
        # Warm-up on one window: allocations and kernel selection, not a whole volume.
        predict_probabilities(model, torch.randn(1, *roi), eval_cfg=cfg, device=device)
        times = time_call(
            lambda: predict_probabilities(model, image, eval_cfg=cfg, device=device),
            repeats=repeats,
            warmup=0,
            device=device,
        )
        stats = summarize(times)
        rows.append(
            {
                "sw_batch_size": sw,
                "amp": amp,
                "channels_last": channels_last,
                "volume": list(shape),
                "windows": windows,
                **stats,
                "s_per_window": stats["median_s"] / windows,
            }
        )
    fastest = min(r["median_s"] for r in rows)
    for r in rows:
        r["relative_to_fastest"] = r["median_s"] / fastest
    return rows


def to_markdown(rows: list[dict[str, Any]], device: torch.device) -> str:
    shape = rows[0]["volume"]
    per_window = min(r["s_per_window"] for r in rows)
    lines = [
        "# Sliding-window inference of one LA volume",
        "",
        f"`rmseg.evaluation.predict_probabilities`, V-Net (vnet3d), window {list(ROI)}, strides {list(STRIDES)}, "
        f"volume {shape} ({rows[0]['windows']} windows), {rows[0]['repeats']} timed repeat(s) after a one-window "
        "warm-up. AMP: autocast (bfloat16 on CPU, float16 on CUDA).",
        "",
    ]
    if device.type != "cuda":
        lines += [
            "**GPU: not measured** (no CUDA device on the benchmark machine); `python -m benchmarks.inference` "
            "runs there unchanged. Which sw_batch_size / AMP / memory-format setting is fastest on a GPU cannot be "
            "read from CPU figures.",
            "",
        ]
    lines.append(markdown_table(rows, ["sw_batch_size", "amp", "channels_last", "median_s", "s_per_window",
                                       "relative_to_fastest"]))
    lines += [
        "",
        f"At the fastest setting's {per_window:.3g} s per window, the largest LA volume {list(LA_LARGEST)} "
        f"({window_count(LA_LARGEST, ROI, STRIDES)} windows) would take about "
        f"{per_window * window_count(LA_LARGEST, ROI, STRIDES):.3g} s (estimate: time is linear in windows).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="volume H W D (default: see module doc)")
    parser.add_argument("--sw-batch-sizes", type=int, nargs="+", default=[1, 4, 8], help="timed in fp32")
    parser.add_argument("--amp-sw-batch-sizes", type=int, nargs="+", default=[4], help="timed with AMP")
    parser.add_argument("--channels-last-sw-batch-sizes", type=int, nargs="+", default=[4],
                        help="timed in channels-last memory format, in fp32 and with AMP")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.quick:
        shape, roi, strides = tuple(args.shape or (48, 40, 36)), (32, 32, 32), (16, 16, 4)
    else:
        shape = tuple(args.shape or (LA_LARGEST if device.type == "cuda" or args.full else LA_SMALLEST))
        roi, strides = ROI, STRIDES
    repeats = args.repeats or (3 if args.full or device.type == "cuda" else 1)
    settings = ([(sw, False, False) for sw in args.sw_batch_sizes] + [(sw, True, False) for sw in args.amp_sw_batch_sizes]
                + [(sw, amp, True) for amp in (False, True) for sw in args.channels_last_sw_batch_sizes])
    rows = benchmark_volume(shape, settings, repeats, device, roi, strides)
    markdown = to_markdown(rows, device) if not args.quick else markdown_table(rows, list(rows[0]))
    write_report("inference", markdown, {"device": str(device), "quick": args.quick, "roi": list(roi),
                                         "strides": list(strides), "rows": rows}, device=device, out_dir=args.out_dir)
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
