"""Contour figures from tiny fixture arrays and fixture run folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmseg.evaluation import save_prediction
from rmseg.cli import figures as figures_cli
from rmseg.reporting import figures
from rmseg.reporting.figures import GT_COLOR, PRED_COLOR, best_row, build_figures, crop_box, overlay_figure, resolve_data_root
from rmseg.reporting.tables import TABLE1

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


def _panel_texts(monkeypatch):
    """Capture the titles and in-panel texts of the figures drawn, instead of saving them."""
    drawn = []

    def capture(fig, out_path):
        drawn.append({"titles": [ax.get_title() for ax in fig.axes], "texts": [t.get_text() for ax in fig.axes for t in ax.texts],
                      "suptitle": fig.get_suptitle()})
        figures.plt.close(fig)
        return out_path

    monkeypatch.setattr(figures, "_save", capture)
    return drawn


def test_panels_are_titled_with_their_dice_and_an_empty_slice_says_so(tmp_path, monkeypatch):
    drawn = _panel_texts(monkeypatch)
    gt = _disc_cup()
    half = gt.copy()
    half[:, 24:] = 0  # cup: 2 * 60 / (60 + 113)
    overlay_figure(np.zeros((3, 40, 48)), gt, {"unet": gt, "rm20": half}, STRUCTURES, tmp_path / "a.png", title="case g1")
    cup, disc = (np.isin(gt, ids) for ids in (STRUCTURES["cup"], STRUCTURES["disc"]))
    half_cup, half_disc = (np.isin(half, ids) for ids in (STRUCTURES["cup"], STRUCTURES["disc"]))
    expected = (2 * (cup & half_cup).sum() / (cup.sum() + half_cup.sum()), 2 * (disc & half_disc).sum() / (disc.sum() + half_disc.sum()))
    assert drawn[0]["titles"] == ["unet\nDice disc 1.000, cup 1.000", f"rm20\nDice disc {expected[1]:.3f}, cup {expected[0]:.3f}"]
    assert drawn[0]["suptitle"] == "case g1" and drawn[0]["texts"] == []
    vol = np.zeros((24, 24, 6), dtype=np.int64)
    vol[6:18, 6:18, 2:5] = 1
    pred = vol.copy()
    pred[..., 2:4] = 0  # slice 4 only: Dice 2 * 144 / (432 + 144); the slice shown (first with most ground truth) is 2
    overlay_figure(np.zeros((1, 24, 24, 6)), vol, {"ground truth": None, "vnet": vol, "rm4": pred}, {"atrium": [1]},
                   tmp_path / "b.png", title="case la01")
    assert drawn[1]["titles"][0] == "ground truth" and drawn[1]["titles"][2] == "rm4\nDice atrium 0.500 (volume)"
    assert drawn[1]["texts"] == ["no predicted atrium\non this slice"] and drawn[1]["suptitle"] == "case la01, axial slice 2"


def test_crop_is_a_square_around_the_structures():
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:60] = True  # 20 x 10: a side of 20 * 1.7 = 34
    rows, cols = crop_box([mask], mask.shape)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (34, 34)
    assert rows.start <= 40 and rows.stop >= 60 and cols.start <= 50 and cols.stop >= 60
    assert crop_box([np.zeros((10, 12), bool)], (10, 12)) == (slice(0, 10), slice(0, 12))


def test_build_figures_from_run_folders_then_from_the_kept_copies(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    assert best_row(TABLE1, runs) == "rm20"  # the only RM row with runs
    gt = {"g1": _disc_cup(), "g2": _disc_cup(shift=2), "g3": _disc_cup(shift=-2)}
    for row, shift in (("unet", 3), ("rm20", 1)):
        for cid in ("g1", "g2"):
            save_prediction(runs / "table1" / row / "seed0" / "predictions", cid, np.roll(gt[cid], shift, axis=1))
    rng = np.random.default_rng(2)
    cases = [{"id": cid, "image": rng.random((3, 40, 48)), "label": lab} for cid, lab in gt.items()]
    out = tmp_path / "figures"
    written, lacking, not_drawn = build_figures(runs, out, load_cases=lambda run_dir: cases)
    assert [p.name for p in written] == ["fig2_gs_case1.png", "fig2_gs_case2.png"]
    # the LA fixture has runs but no predictions: said, with where it looked, never faked
    assert lacking == [] and len(not_drawn) == 1
    assert "fig3_la: no saved prediction of a common test case of table2/vnet and table2/rm3" in not_drawn[0]
    kept = sorted(p.relative_to(out).as_posix() for p in (out / "predictions").rglob("*.nii.gz"))
    assert kept == [f"predictions/table1/{row}/seed0/{cid}.nii.gz" for row in ("rm20", "unet") for cid in ("g1", "g2")]
    first = (out / "fig2_gs_case1.png").read_bytes()
    for row in ("unet", "rm20"):  # a clone has only the kept copies: the same figures come back
        shutil.rmtree(runs / "table1" / row / "seed0" / "predictions")
    written, _, _ = build_figures(runs, out, load_cases=lambda run_dir: cases)
    assert [p.name for p in written] == ["fig2_gs_case1.png", "fig2_gs_case2.png"]
    assert (out / "fig2_gs_case1.png").read_bytes() == first


def test_missing_data_and_missing_predictions_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RMSEG_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"gs test images and labels are not at /nowhere/drishti-gs1: set "
                                                r"RMSEG_DATA_ROOT=/path/holding/drishti-gs1"):
        resolve_data_root({"name": "gs", "root": "/nowhere/drishti-gs1"})
    (tmp_path / "drishti-gs1").mkdir()
    monkeypatch.setenv("RMSEG_DATA_ROOT", str(tmp_path))
    assert resolve_data_root({"name": "gs", "root": "/nowhere/drishti-gs1"})["root"] == str(tmp_path / "drishti-gs1")
    runs = tmp_path / "results" / "runs" / "cpu"
    shutil.copytree(RUNS / "table2", runs / "table2")
    monkeypatch.chdir(tmp_path)
    assert figures_cli.main([]) == 0  # never drawn: a note, not a failure
    out = capsys.readouterr().out
    assert "not drawn: results/figures/cpu/fig3_la: no saved prediction" in out
    stale = tmp_path / "results" / "figures" / "cpu" / "fig3_la_case1.png"  # a figure that cannot be redrawn
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    assert figures_cli.main([]) == 1
    err = capsys.readouterr().err
    assert "cannot draw results/figures/cpu/fig3_la: no saved prediction" in err
    assert "results/figures/cpu/predictions/<experiment>/seed<k>/" in err
