"""HD95 + ASD (+ Dice, Jaccard) of rmseg vs medpy 0.5.2 vs MONAI on the same mask pairs, CPU.

Cases: a 2D 512x512 disc-like pair, a 3D 112x112x80 patch, and a full-size LA-like 576x576x88
volume (a real LA label from ../shared/data padded to that size when present, else an ellipsoid),
each against a smoothly perturbed and shifted copy. Times are medians of repeats of the four metrics
per library (medpy: ``dc, jc, hd95, asd``; MONAI: ``compute_dice``, ``compute_iou``,
``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance``; rmseg:
``evaluate_case``). Agreement is recorded, never asserted: rmseg's medpy convention against medpy,
its MONAI convention against MONAI.

    python -m benchmarks.metrics [--quick] [--repeats N]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou
from scipy import ndimage

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, summarize, time_call, write_report
from rmseg.metrics import evaluate_case

LA_SHAPE = (576, 576, 88)
LA_SPACING = (0.625, 0.625, 0.625)


def shared_data_root() -> Path | None:
    env = os.environ.get("RMSEG_SHARED_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


def ellipsoid(shape: tuple[int, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - (n - 1) / 2) / r) ** 2 for g, n, r in zip(grids, shape, radii)) <= 1.0


def perturbed(mask: np.ndarray, rng: np.random.Generator, amplitude: float = 2.0, shift: int = 2) -> np.ndarray:
    """A prediction-like copy: the boundary moved in and out by smooth noise of ``amplitude`` voxels
    (standard deviation; via the signed distance map, so no islands appear) and shifted by ``shift`` rows."""
    margin = int(4 * amplitude) + shift + 2
    box = tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
        for i, n in zip(np.nonzero(mask), mask.shape)
    )
    crop = mask[box]
    signed = ndimage.distance_transform_edt(crop) - ndimage.distance_transform_edt(~crop)
    noise = ndimage.gaussian_filter(rng.standard_normal(crop.shape), 6)
    out = np.zeros_like(mask)
    out[box] = signed + amplitude * noise / noise.std() > 0
    return np.roll(out, shift, axis=0)


def la_label(root: Path | None, case: str = "UPT6DX9IQY9JAZ7HJKA7") -> tuple[np.ndarray, str]:
    """A real LA label padded (centred) to 576x576x88 when the data is present, else an ellipsoid."""
    path = None if root is None else root / "la2018" / "2018LA_Seg_Training Set" / case / "mri_norm2.h5"
    if path is None or not path.is_file():
        return ellipsoid(LA_SHAPE, (70, 55, 30)), "synthetic ellipsoid"
    with h5py.File(path, "r") as f:
        label = f["label"][:] > 0
    full = np.zeros(LA_SHAPE, bool)
    offset = [(n - s) // 2 for n, s in zip(LA_SHAPE, label.shape)]
    full[tuple(slice(o, o + s) for o, s in zip(offset, label.shape))] = label
    return full, f"real LA label {case} padded"


def cases(rng: np.random.Generator) -> list[dict]:
    """The three benchmark pairs (reference ``gt``, perturbed ``pred``) with shape, spacing and source."""
    la, la_source = la_label(shared_data_root())
    specs = [
        ("2D disc 512x512", (1.0, 1.0), ellipsoid((512, 512), (110, 95)), "synthetic ellipse"),
        ("3D patch 112x112x80", LA_SPACING, ellipsoid((112, 112, 80), (40, 32, 25)), "synthetic ellipsoid"),
        ("LA full size 576x576x88", LA_SPACING, la, la_source),
    ]
    return [
        {"case": name, "spacing": spacing, "gt": gt, "pred": perturbed(gt, rng), "source": source}
        for name, spacing, gt, source in specs
    ]


def run_medpy(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    return {
        "dice": medpy_binary.dc(pred, gt),
        "jaccard": medpy_binary.jc(pred, gt),
        "hd95": float(medpy_binary.hd95(pred, gt, spacing)),
        "asd": float(medpy_binary.asd(pred, gt, spacing)),
    }


def run_monai(pred: torch.Tensor, gt: torch.Tensor, spacing: tuple[float, ...]) -> dict[str, float]:
    kw = {"include_background": True}
    return {
        "dice": float(compute_dice(pred, gt, **kw)),
        "jaccard": float(compute_iou(pred, gt, **kw)),
        "hd95": float(compute_hausdorff_distance(pred, gt, percentile=95, spacing=list(spacing), **kw)),
        "asd": float(compute_average_surface_distance(pred, gt, spacing=list(spacing), **kw)),
    }


def max_relative_difference(ours: dict[str, float], ref: dict[str, float]) -> float:
    return max(abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ("dice", "jaccard", "hd95", "asd"))


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    warnings.filterwarnings("ignore", category=FutureWarning)
    rng = np.random.default_rng(0)
    rows = []
    for case in cases(rng):
        if args.quick and case["gt"].size > 3_000_000:
            continue
        pred, gt, spacing = case["pred"], case["gt"], case["spacing"]
        pred_t, gt_t = (torch.from_numpy(m)[None, None].float() for m in (pred, gt))
        ours = evaluate_case(pred, gt, spacing)
        ours_monai = evaluate_case(pred, gt, spacing, convention="monai")
        medpy_values, monai_values = run_medpy(pred, gt, spacing), run_monai(pred_t, gt_t, spacing)
        times = {
            "rmseg": summarize(time_call(lambda: evaluate_case(pred, gt, spacing), repeats=repeats)),
            "medpy": summarize(time_call(lambda: run_medpy(pred, gt, spacing), repeats=max(repeats // 2, 1), warmup=0)),
            "monai": summarize(time_call(lambda: run_monai(pred_t, gt_t, spacing), repeats=repeats)),
        }
        rows.append(
            {
                "case": case["case"],
                "source": case["source"],
                "spacing": list(spacing),
                "rmseg_s": times["rmseg"]["median_s"],
                "medpy_s": times["medpy"]["median_s"],
                "monai_s": times["monai"]["median_s"],
                "medpy_over_rmseg": times["medpy"]["median_s"] / times["rmseg"]["median_s"],
                "monai_over_rmseg": times["monai"]["median_s"] / times["rmseg"]["median_s"],
                "agrees_with_medpy_1e-6": max_relative_difference(ours, medpy_values) <= 1e-6,
                "rel_diff_vs_medpy": max_relative_difference(ours, medpy_values),
                "rel_diff_monai_convention_vs_monai": max_relative_difference(ours_monai, monai_values),
                "hd95_rmseg": ours["hd95"],
                "hd95_medpy": medpy_values["hd95"],
                "asd_rmseg": ours["asd"],
                "asd_medpy": medpy_values["asd"],
                "timings": times,
            }
        )
        print(markdown_table(rows[-1:], ["case", "rmseg_s", "medpy_s", "monai_s", "medpy_over_rmseg", "monai_over_rmseg"]))
    columns = [
        "case", "rmseg_s", "medpy_s", "monai_s", "medpy_over_rmseg", "monai_over_rmseg",
        "agrees_with_medpy_1e-6", "rel_diff_vs_medpy", "rel_diff_monai_convention_vs_monai", "hd95_rmseg", "asd_rmseg",
    ]
    markdown = "\n\n".join(
        [
            "# Metrics: rmseg vs medpy 0.5.2 vs MONAI (CPU)",
            "Dice, Jaccard, HD95 and ASD of one prediction/reference pair per row; median seconds of "
            f"{repeats} repeats (medpy: {max(repeats // 2, 1)}), measured side by side in one process. "
            "`*_over_rmseg` = how many times slower than rmseg. `rel_diff_vs_medpy`: largest relative "
            "difference of rmseg's four values (medpy convention) from medpy's; "
            "`rel_diff_monai_convention_vs_monai`: rmseg with `convention=\"monai\"` against MONAI "
            "(float32). Distances in spacing units.",
            markdown_table(rows, columns),
            "Sources: " + "; ".join(f"{r['case']}: {r['source']}, spacing {r['spacing']}" for r in rows) + ".",
        ]
    )
    name = "metrics_quick" if args.quick else "metrics"
    md_path, _ = write_report(name, markdown, {"repeats": repeats, "rows": rows}, device="cpu", out_dir=args.out_dir)
    print(f"wrote {md_path}")


if __name__ == "__main__":
    main()
