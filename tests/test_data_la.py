"""LA 2018: UA-MT h5 layout and lists, the raw nrrd path, bad inputs, the real 16/20 protocol."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from rmseg.data import LAConfig, build_train_dataset, la, load_test_cases
from rmseg.data.synthetic import write_la_raw_synthetic

from conftest import tol


def make_h5_root(root, train_ids, test_ids, present=None, shape=(20, 18, 12)):
    present = set(train_ids + test_ids) if present is None else set(present)
    for n, case_id in enumerate(sorted(present)):
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + n
        label = np.zeros(shape, np.uint8)
        label[5:10, 4:8, 2:6] = 1
        la.write_h5(la.h5_path(root, case_id), image, label)
    la.write_lists(root, train_ids, test_ids)
    return root


def test_split_takes_first_num_train_ids(tmp_path):
    root = make_h5_root(tmp_path, ["a", "b", "c"], ["t1", "t2"])
    assert [c["id"] for c in la.split_cases(root, "train", num_train=2)] == ["a", "b"]
    assert [c["id"] for c in la.split_cases(root, "test")] == ["t1", "t2"]
    with pytest.raises(ValueError, match="data.num_train=4 but .*lists only 3"):
        la.split_cases(root, "train", num_train=4)


def test_absent_ids_are_named(tmp_path):
    root = make_h5_root(tmp_path, ["a", "b", "c", "d"], ["t"], present=["a", "b", "t"])
    assert len(la.split_cases(root, "train", num_train=2)) == 2
    with pytest.raises(FileNotFoundError, match=r"2 of the 4 train ids are absent.*c, d\. Only 2 are present.*first 16"):
        la.split_cases(root, "train", num_train=4)


def test_read_h5_values_and_shapes(tmp_path):
    root = make_h5_root(tmp_path, ["a"], ["t"])
    image, label = la.read_h5(la.h5_path(root, "a"))
    assert image.shape == label.shape == (20, 18, 12) and image.dtype == np.float32
    assert image[1, 2, 3] == 1 * 18 * 12 + 2 * 12 + 3  # row-major (H, W, D) as stored
    assert label.sum() == 5 * 4 * 4
    assert la.h5_shapes(la.h5_path(root, "a")) == ((20, 18, 12), (20, 18, 12))


@pytest.mark.parametrize("what", ["corrupt", "missing_key", "shape_mismatch"])
def test_bad_h5_names_the_file(tmp_path, what):
    root = make_h5_root(tmp_path, ["a"], ["t"])
    path = la.h5_path(root, "a")
    if what == "corrupt":
        path.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
        match = "corrupt; re-download"
    elif what == "missing_key":
        with h5py.File(path, "w") as f:
            f["image"] = np.zeros((4, 4, 4), np.float32)
        match = r"lacks the dataset\(s\) \['label'\]"
    else:
        with h5py.File(path, "w") as f:
            f["image"] = np.zeros((4, 4, 4), np.float32)
            f["label"] = np.zeros((4, 4, 3), np.uint8)
        match = r"image shape \(4, 4, 4\) and label shape \(4, 4, 3\)"
    with pytest.raises(ValueError, match=match) as error:
        la.read_h5(path)
    assert str(path) in str(error.value)


def test_missing_root_and_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="RMSEG_DATA_ROOT"):
        la.read_list(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="test.list"):
        la.read_list(tmp_path, "test")


def test_ua_mt_preprocess_by_hand():
    """Bounding box rows 30..39, cols 50..51; margins 10..19; narrow boxes widened towards 112."""
    image = np.zeros((200, 150, 4), np.float32)
    image[0, 0, 0] = 8.0  # mean 8 / N, std known
    label = np.zeros(image.shape, np.uint8)
    label[30:40, 50:52, 1] = 1
    rng = np.random.default_rng(0)
    draws = np.random.default_rng(0).integers(10, 20, 4)
    out, out_label, crop = la.ua_mt_preprocess(image, label, rng, (10, 20), (112, 112))
    pad_rows, pad_cols = (112 - 9) // 2, (112 - 1) // 2
    rows = slice(max(30 - draws[0] - pad_rows, 0), min(39 + draws[1] + pad_rows, 200))
    cols = slice(max(50 - draws[2] - pad_cols, 0), min(51 + draws[3] + pad_cols, 150))
    assert rows.start == 0 and rows.stop - rows.start < 112  # clipped at the top edge: widened downwards
    rows = slice(0, 112)
    assert crop == [[rows.start, rows.stop], [cols.start, cols.stop]]
    assert out.shape == (rows.stop - rows.start, cols.stop - cols.start, 4)
    assert out.shape[0] >= 112 and out.shape[1] >= 112
    np.testing.assert_array_equal(out_label, label[rows, cols])
    assert out_label.sum() == label.sum()
    z = (image - image.mean()) / image.std()
    # float32 z-scores, O(1): the statistics over 200 x 150 x 4 voxels (float64 in ua_mt_preprocess) and the
    # cast; the same formula on the float32 image here sums pairwise in float32
    bound = tol(torch.float32, 200 * 150 * 4, summation="pairwise")
    np.testing.assert_allclose(out, z[rows, cols], rtol=bound, atol=bound)


def test_raw_nrrd_release_becomes_h5_layout(tmp_path):
    raw = write_la_raw_synthetic(tmp_path / "raw", ["c1", "c2", "c3"], train=["c1", "c2"], shape=(40, 36, 6))
    cfg = LAConfig(root=str(raw), prepared_dir=str(tmp_path / "prep"), num_train=2, patch_size=[16, 16, 4], cache=False)
    train = build_train_dataset(cfg)
    assert len(train) == 2 and train[0]["image"].shape == (1, 16, 16, 4)
    test = load_test_cases(cfg)
    assert [c["id"] for c in test] == ["c3"]
    record = json.loads((tmp_path / "prep" / "dataset.json").read_text())["cases"]["c3"]
    assert record["original_size"] == [40, 36, 6]
    # the h5 holds the crop of the volume z-scored as a whole, all slices, labels 255 -> 1
    image, label = la.read_h5(tmp_path / "prep" / la.CASES_DIR / "c3" / la.H5_NAME)
    (r0, r1), (c0, c1) = record["crop"]
    assert image.shape == (r1 - r0, c1 - c0, 6) == tuple(record["prepared_size"])
    original_label = la.read_nrrd(raw / "c3" / "laendo.nrrd") == 255
    np.testing.assert_array_equal(label, original_label[r0:r1, c0:c1])
    assert label.sum() == original_label.sum() > 0
    original = la.read_nrrd(raw / "c3" / "lgemri.nrrd").astype(np.float64)
    bound = tol(torch.float32, 40 * 36 * 6, summation="pairwise")  # z-scores, O(1), stored as float32
    np.testing.assert_allclose(image, ((original - original.mean()) / original.std())[r0:r1, c0:c1], rtol=bound, atol=bound)


def test_raw_nrrd_orientation_is_x_y_z(tmp_path):
    """SimpleITK gives (z, y, x); the h5 layout (as pynrrd/UA-MT) is the file order (x, y, z)."""
    import SimpleITK as sitk

    volume = np.zeros((5, 4, 3), np.uint8)  # (x, y, z)
    volume[4, 0, 0] = 255
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume.transpose(2, 1, 0)), str(path))
    assert sitk.ReadImage(str(path)).GetSize() == (5, 4, 3)
    np.testing.assert_array_equal(la.read_nrrd(path), volume)


def test_raw_bad_inputs(tmp_path):
    raw = write_la_raw_synthetic(tmp_path / "raw", ["c1", "c2"], train=["c1"], shape=(30, 30, 4))
    (raw / "c2" / "laendo.nrrd").unlink()
    with pytest.raises(FileNotFoundError, match="c2/laendo.nrrd not found"):
        la.prepare_raw(raw, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()
    (raw / "train.list").write_text("c1\nc9\n")
    (raw / "c2" / "laendo.nrrd").write_bytes((raw / "c2" / "lgemri.nrrd").read_bytes()[:60])
    with pytest.raises(ValueError, match="c2/laendo.nrrd.*corrupt"):
        la.read_nrrd(raw / "c2" / "laendo.nrrd")
    with pytest.raises(FileNotFoundError, match="c9"):
        la.prepare_raw(raw, tmp_path / "prep")


def write_nrrd(path, volume):
    """``volume`` in (x, y, z) file order, written as the challenge's nrrd files hold it."""
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(volume.transpose(2, 1, 0)), str(path))


@pytest.mark.parametrize("label_shape, value, error", [
    ((30, 30, 3), 255, r"c2/laendo\.nrrd has shape \(30, 30, 3\) but .*c2/lgemri\.nrrd has \(30, 30, 4\)"),
    # laendo.nrrd marks the atrium 255; a label holding other values only (here 1) has no atrium voxel
    ((30, 30, 4), 1, r"c2/laendo\.nrrd has no atrium voxel \(value 255\)"),
], ids=["shape_mismatch", "no_255"])
def test_raw_bad_label_is_refused_naming_the_file(tmp_path, label_shape, value, error):
    raw = write_la_raw_synthetic(tmp_path / "raw", ["c1", "c2"], train=["c1"], shape=(30, 30, 4))
    label = np.zeros(label_shape, np.uint8)
    label[10:20, 10:20, 1] = value
    write_nrrd(raw / "c2" / "laendo.nrrd", label)
    with pytest.raises(ValueError, match=error):
        la.prepare_raw(raw, tmp_path / "prep")
    assert not (tmp_path / "prep").exists() and not list(tmp_path.glob(".prep*"))


def test_ua_mt_preprocess_refuses_an_empty_label(tmp_path):
    write_nrrd(tmp_path / "empty.nrrd", np.zeros((12, 10, 3), np.uint8))
    label = la.read_nrrd(tmp_path / "empty.nrrd")
    with pytest.raises(ValueError, match=r"label is empty: cannot crop around the atrium"):
        la.ua_mt_preprocess(np.ones((12, 10, 3), np.float32), label, np.random.default_rng(0))


# --- the real UA-MT files (skipped when ../shared/data is absent) -----------------------------------


@pytest.mark.realdata
def test_real_protocol_16_20_cases_have_matching_shapes(shared_data):
    root = shared_data / "la2018"
    train, test = la.split_cases(root, "train", 16), la.split_cases(root, "test")
    assert len(train) == 16 and len(test) == 20
    for case in train + test:  # shapes from the headers only: the 36 files hold about 85 MB
        image_shape, label_shape = la.h5_shapes(case["path"])
        assert image_shape == label_shape and len(image_shape) == 3 and image_shape[2] == 88


@pytest.mark.realdata
def test_real_absent_train_ids_error(shared_data):
    with pytest.raises(FileNotFoundError, match="64 of the 80 train ids are absent.*Only 16 are present"):
        la.split_cases(shared_data / "la2018", "train", 80)


@pytest.mark.realdata
def test_real_one_training_sample(shared_data):
    cfg = LAConfig(root=str(shared_data / "la2018"), num_train=1, cache=False)
    sample = build_train_dataset(cfg)[0]
    assert sample["image"].shape == (1, 112, 112, 80) and sample["label"].dtype.is_floating_point is False
    assert set(sample["label"].unique().tolist()) <= {0, 1}
