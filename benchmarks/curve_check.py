"""Loss curve and test metrics of a whole short training run, fp32 against a faster trainer setting.

``benchmarks/training.py`` checks a few steps from the same weights; this trains the same experiment and
seed twice with ``rmseg.cli.train`` (fp32, then the variant's ``trainer.<switch>=true``) and compares what a
user gets: the logged loss curve, the per-case test Dice and the training wall time. The check passes
when the mean loss of the last tenth of the run is within 5% of fp32's and the per-case test Dice is
neither 2 points lower on average nor lower at p < 0.05 (paired Wilcoxon). One seed per setting: the
two runs differ as two seeds would, so this catches a broken setting (divergence, a systematic loss
of accuracy), not effects smaller than the seed-to-seed spread. Settings:

- CPU: the small protocol (``protocol=small``; Table 1: 128x128, U-Net 16..256, 1000 iterations;
  Table 2: 64x64x48 patches, 8 base filters, 1000 iterations);
- CUDA: the paper's protocol, stopped after ``--iters`` (default 500) iterations.

Data: the real datasets under ``--real-root`` (default $RMSEG_DATA_ROOT or ../shared/data), else the
synthetic stand-ins. Runs go to ``results/runs/curve_check/<device>/<variant>/`` (a completed run is
reused); the report to ``results/benchmarks/curve_check.{md,json}``.

    python -m benchmarks.curve_check [--variant amp_bf16_channels_last] [--settings table1 table2]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, pick_device, write_report
from benchmarks.training import SETTINGS, VARIANTS
from rmseg.evaluation.records import read_curve, read_per_case, read_times

# CPU: the small protocol (configs/protocol/small.yaml), cheap enough for two whole runs per setting.
CPU_PROTOCOL = ("protocol=small",)
DATA_FOLDER = {"table1": ("gs", "drishti-gs1"), "table2": ("la", "la2018")}
TAIL_LOSS_REL_TOL, DICE_DROP_TOL, P_MIN = 0.05, 0.02, 0.05


def loss_curve(run: Path) -> dict[int, float]:
    """``{iteration: logged loss}`` of a run folder's ``curve.csv`` (``rmseg.evaluation.records.read_curve``)."""
    curve = read_curve(run / "curve.csv")
    if curve.empty:
        raise ValueError(f"{run / 'curve.csv'} has no rows: the run logged no iteration")
    return {int(i): float(v) for i, v in zip(curve["iteration"], curve["loss"])}


def compare_runs(reference: Path, variant: Path) -> dict[str, Any]:
    """Loss-curve and per-case Dice differences of two completed run folders of the same experiment."""
    ref_curve, var_curve = loss_curve(reference), loss_curve(variant)
    if sorted(ref_curve) != sorted(var_curve):
        raise ValueError(f"{reference} and {variant} logged different iterations: not the same protocol")
    its = sorted(ref_curve)
    ref, var = np.array([ref_curve[i] for i in its]), np.array([var_curve[i] for i in its])
    tail = slice(len(its) - max(len(its) // 10, 1), None)  # last tenth of the run
    ref_cases, var_cases = (read_per_case(p / "per_case.csv") for p in (reference, variant))
    merged = ref_cases.merge(var_cases, on=["id", "structure"], suffixes=("_ref", "_var"), validate="one_to_one")
    if len(merged) != len(ref_cases) or len(merged) != len(var_cases):
        raise ValueError(f"{reference} and {variant} evaluated different test cases")
    diff = merged["dice_var"] - merged["dice_ref"]
    times = [read_times(p / "summary.json")["train_time_s"] for p in (reference, variant)]
    p_value = float(wilcoxon(merged["dice_var"], merged["dice_ref"]).pvalue) if diff.abs().sum() > 0 else 1.0
    tail_rel = abs(var[tail].mean() - ref[tail].mean()) / abs(ref[tail].mean())
    return {
        "logged_iterations": len(its),
        "curve_max_rel_diff": float(np.max(np.abs(var - ref) / np.abs(ref))),
        "curve_median_rel_diff": float(np.median(np.abs(var - ref) / np.abs(ref))),
        "last_tenth_mean_loss_ref": float(ref[tail].mean()),
        "last_tenth_mean_loss_var": float(var[tail].mean()),
        "dice_ref": float(merged["dice_ref"].mean()),
        "dice_var": float(merged["dice_var"].mean()),
        "dice_mean_diff": float(diff.mean()),
        "dice_max_abs_diff": float(diff.abs().max()),
        "dice_wilcoxon_p": p_value,
        "wall_s_ref": float(times[0]),
        "wall_s_var": float(times[1]),
        "speedup": float(times[0]) / float(times[1]),
        "passes": bool(tail_rel <= TAIL_LOSS_REL_TOL and diff.mean() > -DICE_DROP_TOL
                       and not (diff.mean() < 0 and p_value < P_MIN)),
    }


def train_run(setting: str, variant: str, runs_dir: Path, overrides: tuple[str, ...], env: dict[str, str]) -> Path:
    """Train (or find completed) ``setting`` with ``variant``'s switches; returns the run folder."""
    switches = tuple(f"trainer.{name}=true" for name in VARIANTS[variant])
    cmd = [sys.executable, "-m", "rmseg.cli.train", f"experiment={SETTINGS[setting]}", f"paths.runs_dir={runs_dir}",
           "resume=true", "trainer.progress_bar=false", "trainer.tensorboard=false", *overrides, *switches]
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True)
    run = runs_dir / SETTINGS[setting] / "seed0"
    if not (run / "summary.json").is_file():
        raise RuntimeError(f"training {variant} of {setting} ended without {run / 'summary.json'}")
    return run


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--variant", default="amp_bf16_channels_last", choices=[v for v in VARIANTS if v != "fp32"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--iters", type=int, default=500, help="iterations of the paper's protocol on CUDA")
    parser.add_argument("--real-root", type=Path,
                        default=Path(os.environ.get("RMSEG_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "results" / "runs" / "curve_check")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.quick:
        raise SystemExit("curve_check trains whole runs: it has no --quick mode (tests cover it on tiny runs)")
    rows = []
    for setting in args.settings:
        name, folder = DATA_FOLDER[setting]
        real = (args.real_root / folder).is_dir()
        data = (f"data={name}", f"data.root={args.real_root / folder}") if real else (f"data={name}_synthetic",)
        protocol = CPU_PROTOCOL if device.type == "cpu" else (f"trainer.max_iters={args.iters}",)
        overrides = (*data, f"trainer.device={device.type}", *protocol)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        runs = {v: train_run(setting, v, args.runs_dir / device.type / v, overrides, env) for v in ("fp32", args.variant)}
        rows.append({"setting": setting, "experiment": SETTINGS[setting], "data": "real" if real else "synthetic",
                     "variant": args.variant, "overrides": list(overrides),
                     **compare_runs(runs["fp32"], runs[args.variant])})
    columns = ["setting", "data", "variant", "logged_iterations", "curve_median_rel_diff", "curve_max_rel_diff",
               "last_tenth_mean_loss_ref", "last_tenth_mean_loss_var", "dice_ref", "dice_var", "dice_mean_diff",
               "dice_wilcoxon_p", "wall_s_ref", "wall_s_var", "speedup", "passes"]
    markdown = "\n".join([
        "# Whole-run check of a faster trainer setting against fp32",
        "",
        f"Each setting trained twice from seed 0 on `{device.type}` with `rmseg.cli.train` (fp32, then "
        f"`{args.variant}`), one after the other; `_ref` = fp32. Curve: relative difference of the logged loss "
        "(every `trainer.log_every` iterations) at each logged iteration; Dice: mean over test cases and "
        "structures, with the paired Wilcoxon p-value of the per-case differences. Wall time: training only "
        "(each run's `summary.json`). `passes`: last-tenth mean loss within 5% of fp32's, mean Dice neither "
        "2 points lower nor lower at Wilcoxon p < 0.05. One seed per setting: the two runs differ as two "
        "seeds would, so the check catches a broken setting, not effects below the seed-to-seed spread.",
        "",
        markdown_table(rows, columns),
    ])
    write_report("curve_check", markdown, {"device": str(device), "rows": rows}, device=device, out_dir=args.out_dir)
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
