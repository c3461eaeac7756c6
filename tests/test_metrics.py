"""rmseg.metrics: hand-worked cases, medpy 0.5.2 and MONAI agreement, empty masks, bad input, parallel runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage

from rmseg.metrics import (
    METRIC_KEYS,
    asd,
    dice,
    evaluate_case,
    evaluate_cases,
    evaluate_label_map,
    hd95,
    jaccard,
)
from rmseg.metrics.surface import surface

from conftest import tol


def shifted_squares(spacing=None):
    """3x3 squares in a 6x6 image, the reference one column right of the prediction."""
    pred = np.zeros((6, 6), bool)
    gt = np.zeros((6, 6), bool)
    pred[1:4, 1:4] = True
    gt[1:4, 2:5] = True
    return evaluate_case(pred, gt, spacing)


def test_shifted_squares_by_hand():
    # overlap 3x2 = 6 of 9 + 9: Dice 12/18, Jaccard 6/12. Each 8-pixel surface has 4 pixels on the
    # other surface (distance 0) and 4 one column away (distance 1): pooled 8 zeros + 8 ones,
    # P95 at sorted position 0.95 * 15 = 14.25 -> 1; directed mean 4/8.
    r = shifted_squares()
    assert r["dice"] == pytest.approx(2 / 3)
    assert r["jaccard"] == pytest.approx(0.5)
    assert r["hd95"] == pytest.approx(1.0)
    assert r["asd"] == pytest.approx(0.5)
    assert (r["tp"], r["fp"], r["fn"], r["n_pred"], r["n_ref"]) == (6, 3, 3, 9, 9)
    assert (r["pred_empty"], r["ref_empty"], r["penalized"]) == (False, False, False)
    assert tuple(r) == METRIC_KEYS


def test_shifted_squares_anisotropic_by_hand():
    # columns 0.5 apart, rows 2 apart: every non-zero distance is one column step, 0.5.
    r = shifted_squares(spacing=(2.0, 0.5))
    assert r["hd95"] == pytest.approx(0.5)
    assert r["asd"] == pytest.approx(0.25)


def test_conventions_by_hand():
    # pred = pixels (0,0) and (0,4); gt = pixel (0,0) in a 1x5 image; every pixel is surface.
    # d(P->G) = [0, 4], d(G->P) = [0].
    pred = np.array([[1, 0, 0, 0, 1]])
    gt = np.array([[1, 0, 0, 0, 0]])
    medpy = evaluate_case(pred, gt)
    assert medpy["dice"] == pytest.approx(2 / 3)
    assert medpy["hd95"] == pytest.approx(3.6)  # P95 of [0, 0, 4]: position 1.9 -> 0 + 0.9 * 4
    assert medpy["asd"] == pytest.approx(2.0)  # mean of [0, 4]
    monai = evaluate_case(pred, gt, convention="monai")
    assert monai["hd95"] == pytest.approx(3.8)  # max(P95([0, 4]) = 3.8, P95([0]) = 0)
    assert monai["asd"] == pytest.approx(2.0)
    assd = evaluate_case(pred, gt, convention="assd")
    assert assd["hd95"] == pytest.approx(3.6)
    assert assd["asd"] == pytest.approx(4 / 3)  # mean of [0, 4, 0]
    assert hd95(pred, gt, convention="monai") == pytest.approx(3.8)
    assert asd(pred, gt, convention="assd") == pytest.approx(4 / 3)


def test_surface_is_mask_xor_cross_erosion_with_background_outside():
    rng = np.random.default_rng(0)
    masks = [rng.random((7, 9)) < 0.7, rng.random((5, 6, 4)) < 0.8, np.ones((4, 5), bool), np.ones((3, 3, 3), bool)]
    for mask in masks:
        cross = ndimage.generate_binary_structure(mask.ndim, 1)
        np.testing.assert_array_equal(surface(mask), mask ^ ndimage.binary_erosion(mask, cross))
    # a full image: its surface is the image frame
    frame = np.ones((4, 5), bool)
    frame[1:-1, 1:-1] = False
    np.testing.assert_array_equal(surface(np.ones((4, 5), bool)), frame)


def random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Two non-empty masks: independent noise, or a smooth blob and a shifted / eroded / dilated copy."""
    ndim = int(rng.choice([2, 3]))
    shape = tuple(int(n) for n in rng.integers(4, 25 if ndim == 2 else 13, ndim))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, ndim))
    kind = rng.integers(3)
    if kind == 0:
        pred, gt = rng.random(shape) < rng.uniform(0.05, 0.9), rng.random(shape) < rng.uniform(0.05, 0.9)
    else:
        blob = ndimage.gaussian_filter(rng.random(shape), 1.5) > rng.uniform(0.45, 0.55)
        gt = blob
        if kind == 1:
            pred = np.roll(blob, tuple(int(s) for s in rng.integers(-2, 3, ndim)), axis=tuple(range(ndim)))
        else:
            op = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
            pred = op(blob) | (rng.random(shape) < 0.02)
    return pred, gt, spacing


def test_agrees_with_medpy_on_random_pairs():
    rng = np.random.default_rng(20210531)
    checked, failures = 0, []
    while checked < 240:
        pred, gt, spacing = random_pair(rng)
        if not pred.any() or not gt.any():
            continue
        checked += 1
        ours = evaluate_case(pred, gt, spacing)
        ref = {
            "dice": medpy_binary.dc(pred, gt),
            "jaccard": medpy_binary.jc(pred, gt),
            "hd95": medpy_binary.hd95(pred, gt, spacing),
            "asd": medpy_binary.asd(pred, gt, spacing),
        }
        for key, value in ref.items():
            # float64 both: sums (overlaps, mean distances) over at most both masks' voxels
            bound = tol(torch.float64, pred.size + gt.size)
            if not math.isclose(ours[key], value, rel_tol=bound, abs_tol=bound):
                failures.append((pred.shape, spacing, key, ours[key], value))
    assert not failures, failures[:5]


def test_agrees_with_medpy_on_masks_touching_the_image_border():
    full = np.ones((6, 7), bool)
    top = np.zeros((6, 7), bool)
    top[:3] = True
    corner = np.zeros((5, 6, 4), bool)
    corner[:2, :3, :] = True
    box = np.zeros((5, 6, 4), bool)
    box[1:4, 2:5, 1:3] = True
    for pred, gt, spacing in [(full, top, (0.5, 2.0)), (top, full, (1.0, 1.0)), (corner, box, (2.0, 0.7, 1.3))]:
        ours = evaluate_case(pred, gt, spacing)
        bound = tol(torch.float64, pred.size + gt.size)
        assert ours["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt, spacing), rel=bound)
        assert ours["asd"] == pytest.approx(medpy_binary.asd(pred, gt, spacing), rel=bound)


def test_non_contiguous_views_give_the_values_of_their_copies():
    rng = np.random.default_rng(5)
    pred, gt = rng.random((9, 11, 7)) < 0.6, rng.random((9, 11, 7)) < 0.6
    views = (pred.transpose(2, 0, 1)[:, ::2], gt.transpose(2, 0, 1)[:, ::2])
    spacing_view = (0.5, 1.0, 2.0)
    assert evaluate_case(*views, spacing_view) == evaluate_case(*(np.ascontiguousarray(v) for v in views), spacing_view)
    assert evaluate_case(*views, spacing_view)["hd95"] == pytest.approx(medpy_binary.hd95(*views, spacing_view),
                                                                       rel=tol(torch.float64, 2 * views[0].size))


def test_agrees_with_medpy_assd_when_directions_have_equal_size():
    # medpy's assd averages the two directed means; with equally many surface voxels on both sides
    # (a mirrored pair) that equals the pooled mean used here.
    rng = np.random.default_rng(3)
    for _ in range(10):
        gt = ndimage.gaussian_filter(rng.random((16, 16)), 1.5) > 0.5
        if not gt.any():
            continue
        pred = gt[::-1]
        assert asd(pred, gt, (1.5, 0.7), convention="assd") == pytest.approx(
            medpy_binary.assd(pred, gt, (1.5, 0.7)), rel=tol(torch.float64, 2 * gt.size)
        )


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_monai_convention_agrees_with_monai():
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 30:
        pred, gt, spacing = random_pair(rng)
        if not pred.any() or not gt.any():
            continue
        checked += 1
        ours = evaluate_case(pred, gt, spacing, convention="monai")
        y_pred, y = (torch.from_numpy(m)[None, None].float() for m in (pred, gt))
        ref_hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=list(spacing))
        ref_asd = compute_average_surface_distance(y_pred, y, include_background=True, spacing=list(spacing))
        # MONAI computes in float32: distances, and the mean of at most both masks' voxels
        bound = tol(torch.float32, pred.size + gt.size)
        assert ours["hd95"] == pytest.approx(float(ref_hd), rel=bound, abs=bound)
        assert ours["asd"] == pytest.approx(float(ref_asd), rel=bound, abs=bound)


def test_dice_and_jaccard_functions():
    pred = np.array([[1, 1, 0], [0, 1, 0]], dtype=np.uint8)
    gt = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.uint8)
    assert dice(pred, gt) == pytest.approx(2 * 2 / 6)
    assert jaccard(pred, gt) == pytest.approx(2 / 4)
    assert dice(pred.astype(float), gt.astype(bool)) == pytest.approx(2 / 3)


def test_one_mask_empty_takes_diagonal_penalty_and_flags():
    gt = np.zeros((4, 3), bool)
    gt[1, 1] = True
    empty = np.zeros_like(gt)
    r = evaluate_case(empty, gt, spacing=(1.0, 2.0))
    diagonal = math.sqrt((4 * 1.0) ** 2 + (3 * 2.0) ** 2)
    assert r["hd95"] == pytest.approx(diagonal) and r["asd"] == pytest.approx(diagonal)
    assert (r["dice"], r["jaccard"]) == (0.0, 0.0)
    assert (r["pred_empty"], r["ref_empty"], r["penalized"]) == (True, False, True)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 1)
    r = evaluate_case(gt, empty, empty_penalty=50.0)
    assert (r["hd95"], r["asd"]) == (50.0, 50.0)
    assert (r["pred_empty"], r["ref_empty"], r["penalized"]) == (False, True, True)
    assert hd95(empty, gt) == pytest.approx(5.0)  # 4x3 unit-spaced image


def test_both_empty():
    empty = np.zeros((5, 4, 3), bool)
    r = evaluate_case(empty, empty)
    assert (r["dice"], r["jaccard"], r["hd95"], r["asd"]) == (1.0, 1.0, 0.0, 0.0)
    assert (r["pred_empty"], r["ref_empty"], r["penalized"]) == (True, True, False)
    assert dice(empty, empty) == 1.0 and jaccard(empty, empty) == 1.0


def disc_and_cup_maps() -> tuple[np.ndarray, np.ndarray]:
    """Label maps 0 background, 1 disc rim, 2 cup: prediction with a cup one row lower."""
    gt = np.zeros((8, 8), np.int64)
    gt[1:7, 1:7] = 1
    gt[3:5, 3:5] = 2
    pred = gt.copy()
    pred[3:5, 3:5] = 1
    pred[4:6, 3:5] = 2
    return pred, gt


def test_evaluate_label_map_structures_are_unions_of_labels():
    pred, gt = disc_and_cup_maps()
    out = evaluate_label_map(pred, gt, {"disc": [1, 2], "cup": [2]}, spacing=(1.0, 1.0))
    assert list(out) == ["disc", "cup"]
    assert out["disc"]["dice"] == 1.0 and out["disc"]["hd95"] == 0.0
    # cup: 2x2 squares one row apart -> overlap 2 of 4 + 4
    assert out["cup"]["dice"] == pytest.approx(0.5)
    assert out["cup"] == evaluate_case(pred == 2, gt == 2)


def test_evaluate_label_map_missing_structure_takes_whole_image_diagonal():
    pred, gt = disc_and_cup_maps()
    pred[pred == 2] = 1  # no cup predicted; the disc still spans a small part of the 8x8 image
    out = evaluate_label_map(pred, gt, {"disc": [1, 2], "cup": [2]}, spacing=(2.0, 1.0))
    assert out["cup"]["penalized"] and out["cup"]["pred_empty"]
    assert out["cup"]["hd95"] == pytest.approx(math.sqrt(16.0**2 + 8.0**2))
    assert not out["disc"]["penalized"]


def test_evaluate_label_map_background_structure_covers_the_whole_image():
    pred, gt = disc_and_cup_maps()
    out = evaluate_label_map(pred, gt, {"background": [0], "cup": [2]})
    assert out["background"] == evaluate_case(pred == 0, gt == 0)
    assert out["cup"] == evaluate_case(pred == 2, gt == 2)
    pred[7, 7] = 3  # a label outside the evaluated structures, away from them
    assert evaluate_label_map(pred, gt, {"cup": [2]})["cup"] == evaluate_case(pred == 2, gt == 2)


def test_evaluate_cases_keeps_order_and_matches_serial():
    rng = np.random.default_rng(11)
    pred, gt = disc_and_cup_maps()
    cases = [(f"case{k}", np.roll(pred, k, axis=1), gt, (1.0, 0.5 + k)) for k in range(5)]
    structures = {"disc": [1, 2], "cup": [2]}
    serial = evaluate_cases(cases, structures, workers=1)
    parallel = evaluate_cases(iter(cases), structures, workers=2)
    assert serial == parallel
    assert [(r["id"], r["structure"]) for r in serial] == [(f"case{k}", s) for k in range(5) for s in ("disc", "cup")]
    assert {k: serial[2][k] for k in METRIC_KEYS} == evaluate_label_map(*cases[1][1:3], structures, cases[1][3])["disc"]
    masks = [(rng.random((6, 6)) < 0.5, rng.random((6, 6)) < 0.5) for _ in range(3)]
    rows = evaluate_cases(masks)
    assert [(r["id"], r["structure"]) for r in rows] == [("0", "mask"), ("1", "mask"), ("2", "mask")]
    assert rows[2]["dice"] == pytest.approx(medpy_binary.dc(*masks[2]))


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.array([[0, 2], [1, 0]]), np.zeros((2, 2)), {}, "not binary"),
        (np.array([[0.0, 0.5], [1, 0]]), np.zeros((2, 2)), {}, "not binary"),
        (np.array([[0.0, np.nan], [1, 0]]), np.zeros((2, 2)), {}, "NaN"),
        (np.zeros((3, 3)), np.zeros((3, 4)), {}, "shape mismatch"),
        (np.zeros(5), np.zeros(5), {}, "2D"),
        (np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), {}, "2D"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"spacing": (1.0, 1.0, 1.0)}, "one value per spatial axis"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"spacing": (1.0, -1.0)}, "positive"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"spacing": (1.0, 0.0)}, "positive"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"spacing": (1.0, float("nan"))}, "positive"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"convention": "nnunet"}, "convention 'nnunet'"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"empty_penalty": -1.0}, "empty_penalty"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {"empty_penalty": float("nan")}, "empty_penalty"),
    ],
)
def test_bad_input_names_the_problem(pred, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_case(pred, gt, **kwargs)


def test_bad_input_of_each_function():
    two = np.array([[0, 2], [1, 0]])
    for fn in (dice, jaccard, hd95, asd):
        with pytest.raises(ValueError, match="not binary"):
            fn(two, np.zeros((2, 2)))
    labels = np.zeros((3, 3), np.int64)
    with pytest.raises(ValueError, match="non-integer"):
        evaluate_label_map(labels + 0.5, labels, {"a": [1]})
    with pytest.raises(ValueError, match="NaN"):
        evaluate_label_map(np.full((3, 3), np.nan), labels, {"a": [1]})
    with pytest.raises(ValueError, match="structures"):
        evaluate_label_map(labels, labels, {})
    with pytest.raises(ValueError, match="'cup'"):
        evaluate_label_map(labels, labels, {"cup": []})
    with pytest.raises(ValueError, match="'cup'"):
        evaluate_label_map(labels, labels, {"cup": [1.5]})
    with pytest.raises(ValueError, match="workers 0"):
        evaluate_cases([(labels, labels)], workers=0)
    with pytest.raises(ValueError, match="case 0 must be a tuple"):
        evaluate_cases([labels])
    with pytest.raises(ValueError, match="gt of case 'b' is not binary"):
        evaluate_cases([("a", labels, labels), ("b", labels, labels + 2)], workers=2)
    with pytest.raises(ValueError, match="pred of case 'a' holds non-integer"):
        evaluate_cases([("a", labels + 0.5, labels)], {"disc": [1]})
