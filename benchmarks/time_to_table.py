"""Time to the paper's tables: estimated wall time of ``make reproduce-gs`` / ``reproduce-la``.

Estimate per table = seeds x rows x (iterations x seconds per iteration + test cases x seconds per
test case), runs one after another, from figures measured on this machine:

- seconds per iteration: ``training.json`` (the fp32 step, which is the trainer's default, and the
  fastest variant whose loss curve matched fp32);
- seconds per test case: Table 1 measures here the whole-image prediction of one 512x512 image
  (``rmseg.evaluation.predict_probabilities``, fp32); Table 2 takes the per-window time of
  ``inference.json`` at the variant's AMP / channels-last setting times the windows of the largest LA
  volume (an upper bound for the 20 test volumes).

Rows and iterations come from the experiment configs (``configs/experiment/table{1,2}``). Metric
computation, data preparation and start-up are not included. With ``--make test`` it also runs the
test suite and records its wall time; ``make demo``'s cold-start wall time is quoted from ``demo.json``
(``benchmarks/demo.py``: ``make demo`` itself skips completed runs, so timing it here would mislead).

Run ``python -m benchmarks.time_to_table``; writes ``results/benchmarks/time_to_table.{md,json}``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, pick_device, summarize, time_call, write_report
from benchmarks.inference import LA_LARGEST, ROI, STRIDES, window_count
from benchmarks.training import SETTINGS, VARIANTS, setting_config
from rmseg.config.compose import compose_config, experiment_names
from rmseg.evaluation import EvalConfig, predict_probabilities
from rmseg.models import build_model

TEST_CASES = {"table1": 51, "table2": 20}  # Drishti-GS official test split; LA test.list
TARGETS_GPU_MIN = {"table1": 20, "table2": 90}  # issue targets on one H100-class GPU
MAKE_TARGETS_MIN = {"test": 15}  # target on 2 CPU cores; make demo's cold-start time is benchmarks/demo.py's


def load_json(path: Path) -> dict[str, Any]:
    """A benchmark report; FileNotFoundError names the benchmark to run first."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m benchmarks.{path.stem}` first (same --out-dir)")
    return json.loads(path.read_text())


def seconds_per_2d_image(device: torch.device, repeats: int, size: int = 512) -> float:
    """Median seconds of ``predict_probabilities`` on one 3-channel ``size`` x ``size`` image (U-Net)."""
    cfg = setting_config("table1")
    model = build_model(cfg.model, cfg.data).to(device)
    image = torch.randn(int(cfg.data.in_channels), size, size)
    eval_cfg = EvalConfig()
    times = time_call(lambda: predict_probabilities(model, image, eval_cfg=eval_cfg, device=device),
                      repeats=repeats, warmup=1, device=device)
    return summarize(times)["median_s"]


def estimate(training: dict[str, Any], inference: dict[str, Any], s_per_image_2d: float, seeds: int) -> list[dict]:
    """One row per table and variant: rows x seeds runs of (iterations x s/iter + test cases x s/case).

    A 3D test case takes the largest LA volume's windows at the fastest per-window time of the inference
    rows with the variant's AMP / channels-last (fp32 rows where the report has none of those)."""
    windows = window_count(LA_LARGEST, ROI, STRIDES)

    def s_per_case(name: str, variant: str) -> float:
        if name == "table1":
            return s_per_image_2d
        switches = VARIANTS[variant]
        wanted = ("amp" in switches, "channels_last" in switches)
        rows = [r for r in inference["rows"] if (r.get("amp", False), r.get("channels_last", False)) == wanted]
        rows = rows or [r for r in inference["rows"] if not r.get("amp", False) and not r.get("channels_last", False)]
        return min(r["s_per_window"] for r in rows) * windows

    out = []
    for setting in training["settings"]:
        name = setting["setting"]
        rows = experiment_names(name)
        iters = int(compose_config([f"experiment={SETTINGS[name]}"]).trainer.max_iters)
        fp32 = next(v for v in setting["variants"] if v["variant"] == "fp32")
        matching = [v for v in setting["variants"] if v["curve_matches"]]
        best = min(matching, key=lambda v: v["median_s"])
        for variant in dict.fromkeys([fp32["variant"], best["variant"]]):
            s_iter = next(v for v in setting["variants"] if v["variant"] == variant)["median_s"]
            run_s = iters * s_iter + TEST_CASES[name] * s_per_case(name, variant)
            out.append(
                {
                    "table": name,
                    "make_target": "reproduce-gs" if name == "table1" else "reproduce-la",
                    "variant": variant,
                    "rows": len(rows),
                    "seeds": seeds,
                    "iterations": iters,
                    "s_per_iteration": s_iter,
                    "test_cases": TEST_CASES[name],
                    "s_per_test_case": s_per_case(name, variant),
                    "run_min": run_s / 60,
                    "total_h": len(rows) * seeds * run_s / 3600,
                    "target_gpu_min": TARGETS_GPU_MIN[name],
                }
            )
    return out


def time_make(target: str, timeout_s: float) -> dict[str, Any]:
    """Measured wall time of ``make <target>`` in the repository (rc and whether it timed out)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(["make", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
        rc, timed_out = proc.returncode, False
        error = (proc.stderr.strip().splitlines() or [""])[-1][:300] if rc else None
    except subprocess.TimeoutExpired:
        rc, timed_out, error = None, True, f"still running after {timeout_s:.0f} s"
    wall = time.perf_counter() - start
    return {
        "target": target,
        "wall_s": wall if rc == 0 else None,  # a failed or cut-off run's time is no measurement
        "rc": rc,
        "timed_out": timed_out,
        "error": error,
        "target_min": MAKE_TARGETS_MIN.get(target),
    }


def to_markdown(
    rows: list[dict], makes: list[dict], demo: dict | None, device: torch.device, training_device: str
) -> str:
    lines = [
        "# Time to the tables",
        "",
        f"Estimated from per-iteration times measured on `{training_device}` (`training.md`) and per-case "
        "inference times; sequential runs; metrics, data preparation and start-up not included.",
        "",
    ]
    if device.type != "cuda":
        lines += [
            "**GPU: not measured** (no CUDA device on the benchmark machine), so the targets for one H100-class "
            "GPU (Table 1 <= 20 min, Table 2 <= 90 min) cannot be checked here: run `make bench` on the GPU.",
            "",
        ]
    lines.append(markdown_table(rows, ["make_target", "variant", "rows", "seeds", "iterations", "s_per_iteration",
                                       "s_per_test_case", "run_min", "total_h", "target_gpu_min"]))
    lines += ["", "## Measured make targets (this machine)", ""]
    if demo is not None:
        lines.append(f"- `make demo` from a cold start: {demo['median_wall_s']:.1f} s median (`demo.md`; target 300 s).")
    else:
        lines.append("- `make demo`: not measured (run `python -m benchmarks.demo`).")
    if makes:
        lines += ["", markdown_table(makes, ["target", "wall_s", "rc", "timed_out", "error", "target_min"])]
    else:
        lines.append("- `make test`: not measured (run with `--make test`).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--make", nargs="*", default=[], choices=sorted(MAKE_TARGETS_MIN),
                        help="make targets whose wall time to measure (each may take minutes)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} must be >= 1")
    device = pick_device(args.device)
    out = Path(args.out_dir)
    training = load_json(out / "training.json")
    inference = load_json(out / "inference.json")
    s_2d = seconds_per_2d_image(device, repeats=args.repeats or (1 if args.quick else 3),
                                size=64 if args.quick else 512)
    rows = estimate(training, inference, s_2d, args.seeds)
    makes = [time_make(t, timeout_s=2 * 60 * MAKE_TARGETS_MIN[t]) for t in args.make]
    demo = load_json(out / "demo.json") if (out / "demo.json").is_file() else None
    markdown = to_markdown(rows, makes, demo, device, training["device"])
    write_report("time_to_table", markdown, {"device": str(device), "quick": args.quick, "estimates": rows,
                                             "make": makes, "demo_cold_wall_s": demo["median_wall_s"] if demo else None},
                 device=device, out_dir=out)
    print(markdown)
    return {"estimates": rows, "make": makes}


if __name__ == "__main__":
    main()
