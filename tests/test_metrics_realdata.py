"""rmseg.metrics against medpy 0.5.2 on real Drishti-GS and LA masks (skipped without ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from PIL import Image
from scipy import ndimage

from rmseg.metrics import evaluate_case

from conftest import tol

pytestmark = pytest.mark.realdata


def assert_matches_medpy(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> None:
    ours = evaluate_case(pred, gt, spacing)
    assert not ours["penalized"]
    bound = tol(torch.float64, pred.size + gt.size)  # float64 both: sums over at most both masks' voxels
    assert ours["dice"] == pytest.approx(medpy_binary.dc(pred, gt), rel=bound)
    assert ours["jaccard"] == pytest.approx(medpy_binary.jc(pred, gt), rel=bound)
    assert ours["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt, spacing), rel=bound)
    assert ours["asd"] == pytest.approx(medpy_binary.asd(pred, gt, spacing), rel=bound)


def soft_map(root: Path, case: str, structure: str) -> np.ndarray:
    path = root / "drishti-gs1" / "Drishti-GS1_files" / "Test" / "Test_GT" / case / "SoftMap" / f"{case}_{structure}segSoftmap.png"
    return np.asarray(Image.open(path).convert("L"))


@pytest.mark.parametrize("case", ["drishtiGS_001", "drishtiGS_021"])
def test_drishti_disc_and_cup_at_two_thresholds(shared_data, case):
    disc, cup = soft_map(shared_data, case, "OD"), soft_map(shared_data, case, "cup")
    spacing = (1.0, 1.3)
    # soft-map levels 0, 64, 128, 191, 255 = 0 to 4 of the 4 experts: > 63 is at least 1 expert, > 127 at least
    # 2 (half, not a majority: a majority is > 128, the preparation's default threshold)
    assert_matches_medpy(disc > 63, disc > 127, spacing)
    assert_matches_medpy(cup > 63, cup > 127, spacing)
    assert_matches_medpy(ndimage.binary_dilation(cup > 127, iterations=15), disc > 127, spacing)


@pytest.mark.parametrize("case", ["UPT6DX9IQY9JAZ7HJKA7", "ULHWPWKKLTE921LQLH1P"])
def test_la_labels_against_shifted_and_eroded_copies(shared_data, case):
    with h5py.File(shared_data / "la2018" / "2018LA_Seg_Training Set" / case / "mri_norm2.h5", "r") as f:
        label = f["label"][:] > 0
    spacing = (0.625, 0.625, 1.25)
    assert_matches_medpy(np.roll(label, (3, -2, 1), axis=(0, 1, 2)), label, spacing)
    assert_matches_medpy(ndimage.binary_erosion(label, iterations=2), label, spacing)
