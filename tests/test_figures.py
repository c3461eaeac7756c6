"""Contour figures from tiny fixture arrays and fixture run folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmseg.evaluation import save_prediction
from rmseg.figures import GT_COLOR, PRED_COLOR, best_row, build_figures, overlay_figure
from rmseg.tables import TABLE1

RUNS = Path(__file__).parent / "golden" / "runs"
STRUCTURES = {"disc": [1, 2], "cup": [2]}


def _disc_cup(shape=(40, 48), shift=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - 20) ** 2 + (xx - 24 - shift) ** 2
    label = np.zeros(shape, dtype=np.int64)
    label[r2 < 14**2] = 1
    label[r2 < 6**2] = 2
    return label


def _has_color(png: Path, hex_color: str) -> bool:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgb - target).sum(-1) < 60).any())


def test_gs_overlay_png_is_written_and_shows_both_contours(tmp_path):
    image = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    out = overlay_figure(image, _disc_cup(), {"unet": _disc_cup(shift=3), "rm20": _disc_cup(shift=1)}, STRUCTURES,
                         tmp_path / "fig.png", title="case g1")
    assert out.is_file() and not list(tmp_path.glob(".*"))
    pixels = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank
    assert _has_color(out, GT_COLOR) and _has_color(out, PRED_COLOR)


def test_la_overlay_draws_the_largest_ground_truth_slice(tmp_path):
    gt = np.zeros((24, 24, 6), dtype=np.int64)
    gt[6:18, 6:18, 3] = 1
    gt[10:14, 10:14, 1] = 1
    out = overlay_figure(np.random.default_rng(1).random((1, 24, 24, 6)), gt,
                         {"ground truth": None, "vnet": gt, "rm4": np.roll(gt, 2, axis=0)}, {"atrium": [1]},
                         tmp_path / "la.png")
    assert _has_color(out, GT_COLOR) and _has_color(out, PRED_COLOR)
    with pytest.raises(ValueError, match="slice_index 9"):
        overlay_figure(np.zeros((1, 24, 24, 6)), gt, {"vnet": gt}, {"atrium": [1]}, tmp_path / "x.png", slice_index=9)
    with pytest.raises(ValueError, match="shape"):
        overlay_figure(np.zeros((3, 40, 48)), _disc_cup(), {"unet": np.zeros((4, 4))}, STRUCTURES, tmp_path / "y.png")


def test_build_figures_from_run_folders(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    assert best_row(TABLE1, runs) == "rm20"  # the only RM row with runs
    gt = {"g1": _disc_cup(), "g2": _disc_cup(shift=2), "g3": _disc_cup(shift=-2)}
    for row, shift in (("unet", 3), ("rm20", 1)):
        for cid in ("g1", "g2"):
            save_prediction(runs / "table1" / row / "seed0" / "predictions", cid, np.roll(gt[cid], shift, axis=1))
    rng = np.random.default_rng(2)
    cases = [{"id": cid, "image": rng.random((3, 40, 48)), "label": lab} for cid, lab in gt.items()]
    written, skipped = build_figures(runs, tmp_path / "figures", load_cases=lambda run_dir: cases)
    assert [p.name for p in written] == ["fig2_gs_case1.png", "fig2_gs_case2.png"]
    assert skipped and skipped[0].startswith("table2")  # no LA runs in the fixture: skipped, not faked
