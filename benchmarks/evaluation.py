"""Whole-test-set evaluation with rmseg.metrics.evaluate_cases: 1 worker vs 2 worker processes, CPU.

Test sets as the paper's: 51 Drishti-GS label maps (disc and cup, majority-vote ground truth from the
release's soft maps) and 20 LA label volumes (UA-MT's test list), each against a smoothly perturbed
copy standing in for a prediction. Without ../shared/data, synthetic ellipse/ellipsoid label maps of
the same sizes are used. Times are medians of repeats of the whole ``evaluate_cases`` call, workers=1
and workers=2 measured side by side in one run. As a control of how much parallelism the machine
has to give at that moment (it may be shared), the same is timed for a pure-Python CPU loop split
into equal tasks; the load average is recorded before and after.

    python -m benchmarks.evaluation [--quick] [--repeats N]
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from concurrent.futures import ProcessPoolExecutor

from benchmarks.common import bench_parser, markdown_table, summarize, time_call, write_report
from benchmarks.metrics import ellipsoid, perturbed, shared_data_root
from rmseg.metrics import evaluate_cases

GS_STRUCTURES = {"disc": [1, 2], "cup": [2]}
LA_STRUCTURES = {"atrium": [1]}


def gs_label(disc: np.ndarray, cup: np.ndarray) -> np.ndarray:
    label = disc.astype(np.uint8)
    label[cup & disc] = 2
    return label


def drishti_cases(root: Path | None, rng: np.random.Generator, count: int) -> tuple[list[tuple], str]:
    """``(id, pred, gt)`` label maps 0/1 (disc rim)/2 (cup); real soft maps > 127 when present."""
    test = None if root is None else root / "drishti-gs1" / "Drishti-GS1_files" / "Test" / "Test_GT"
    cases = []
    if test is not None and test.is_dir():
        for folder in sorted(test.iterdir())[:count]:
            soft = folder / "SoftMap"
            disc = np.asarray(Image.open(soft / f"{folder.name}_ODsegSoftmap.png").convert("L")) > 127
            cup = np.asarray(Image.open(soft / f"{folder.name}_cupsegSoftmap.png").convert("L")) > 127
            pred = gs_label(perturbed(disc, rng), perturbed(cup, rng))
            cases.append((folder.name, pred, gs_label(disc, cup)))
        return cases, "Drishti-GS1 test soft maps > 127"
    for k in range(count):
        disc, cup = ellipsoid((1024, 880), (110 + k % 7, 95)), ellipsoid((1024, 880), (60, 50 + k % 5))
        cases.append((f"synthetic_{k:03d}", gs_label(perturbed(disc, rng), perturbed(cup, rng)), gs_label(disc, cup)))
    return cases, "synthetic ellipses 1024x880"


def la_cases(root: Path | None, rng: np.random.Generator, count: int) -> tuple[list[tuple], str]:
    """``(id, pred, gt)`` binary atrium label volumes; UA-MT's test list when present."""
    la = None if root is None else root / "la2018"
    cases = []
    if la is not None and (la / "test.list").is_file():
        for case in (la / "test.list").read_text().split()[:count]:
            with h5py.File(la / "2018LA_Seg_Training Set" / case / "mri_norm2.h5", "r") as f:
                gt = f["label"][:] > 0
            cases.append((case, perturbed(gt, rng).astype(np.uint8), gt.astype(np.uint8)))
        return cases, "LA2018 (UA-MT) test labels"
    for k in range(count):
        gt = ellipsoid((224, 160, 88), (60 + k % 5, 45, 30))
        cases.append((f"synthetic_{k:03d}", perturbed(gt, rng).astype(np.uint8), gt.astype(np.uint8)))
    return cases, "synthetic ellipsoids 224x160x88"


def cpu_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_control(repeats: int, tasks: int = 8, n: int = 2_000_000) -> dict[str, float]:
    """Median seconds of ``tasks`` equal CPU-bound tasks run in this process vs on 2 worker processes."""

    def on_two() -> None:
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(cpu_loop, [n] * tasks))

    serial = summarize(time_call(lambda: [cpu_loop(n) for _ in range(tasks)], repeats=repeats, warmup=0))
    parallel = summarize(time_call(on_two, repeats=repeats, warmup=0))
    return {"workers_1_s": serial["median_s"], "workers_2_s": parallel["median_s"], "speedup": serial["median_s"] / parallel["median_s"]}


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    rng = np.random.default_rng(0)
    root = shared_data_root()
    sets = [
        ("Drishti-GS test", *drishti_cases(root, rng, 5 if args.quick else 51), GS_STRUCTURES),
        ("LA test", *la_cases(root, rng, 3 if args.quick else 20), LA_STRUCTURES),
    ]
    load_before = os.getloadavg()
    control = parallel_control(repeats)
    rows = []
    for name, cases, source, structures in sets:
        results, times = {}, {}
        for workers in (1, 2):
            results[workers] = evaluate_cases(cases, structures, workers=workers)
            times[workers] = summarize(
                time_call(lambda: evaluate_cases(cases, structures, workers=workers), repeats=repeats, warmup=0)
            )
        mean_dice = {s: float(np.mean([r["dice"] for r in results[1] if r["structure"] == s])) for s in structures}
        rows.append(
            {
                "test_set": name,
                "source": source,
                "cases": len(cases),
                "shape_example": "x".join(map(str, cases[0][2].shape)),
                "workers_1_s": times[1]["median_s"],
                "workers_2_s": times[2]["median_s"],
                "speedup": times[1]["median_s"] / times[2]["median_s"],
                "per_case_ms_workers_1": 1000 * times[1]["median_s"] / len(cases),
                "identical_results": results[1] == results[2],
                "mean_dice": mean_dice,
                "timings": {f"workers_{w}": t for w, t in times.items()},
            }
        )
        print(markdown_table(rows[-1:], ["test_set", "cases", "workers_1_s", "workers_2_s", "speedup"]))
    load_after = os.getloadavg()
    columns = ["test_set", "cases", "shape_example", "workers_1_s", "workers_2_s", "speedup", "per_case_ms_workers_1", "identical_results"]
    markdown = "\n\n".join(
        [
            "# Whole-test-set evaluation (rmseg.metrics.evaluate_cases, CPU)",
            f"Dice, Jaccard, HD95, ASD of every case and structure (medpy convention); median wall time of "
            f"{repeats} runs of the whole set with 1 and 2 worker processes (process start-up and transfer "
            f"of the arrays included), side by side in one run. `os.cpu_count()` = {os.cpu_count()}.",
            markdown_table(rows, columns),
            f"Control (same run): 8 equal pure-Python CPU tasks took {control['workers_1_s']:.3g} s in one "
            f"process and {control['workers_2_s']:.3g} s on 2 worker processes, a speedup of "
            f"{control['speedup']:.2f}: the parallelism the machine had to give. Load average (1, 5, 15 min) "
            f"before: {', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in load_after)}.",
            "Sources: " + "; ".join(f"{r['test_set']}: {r['source']}, predictions = perturbed copies" for r in rows) + ".",
        ]
    )
    name = "evaluation_quick" if args.quick else "evaluation"
    md_path, _ = write_report(name, markdown, {"repeats": repeats, "rows": rows, "control": control, "load_average_before": load_before, "load_average_after": load_after}, device="cpu", out_dir=args.out_dir)
    print(f"wrote {md_path}")


if __name__ == "__main__":
    main()
