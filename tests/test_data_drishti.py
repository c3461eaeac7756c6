"""Drishti-GS reading and preparation: hand-made releases, bad inputs, orientation, the real release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rmseg.data import DrishtiConfig, build_train_dataset, drishti, load_test_cases
from rmseg.data.prepared import MANIFEST
from rmseg.losses import ResidualMomentLoss

from conftest import tol

SOFT = {"disc": "_ODsegSoftmap.png", "cup": "_cupsegSoftmap.png"}


def write_case(base: Path, split: str, case_id: str, image: np.ndarray, disc: np.ndarray, cup: np.ndarray,
               gt_name: str | None = None, images_sub: str = "") -> None:
    folder = "Training" if split == "train" else "Test"
    gt_name = gt_name or ("GT" if split == "train" else "Test_GT")
    images = base / folder / "Images" / images_sub
    soft = base / folder / gt_name / case_id / "SoftMap"
    images.mkdir(parents=True, exist_ok=True)
    soft.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(images / f"{case_id}.png")
    Image.fromarray(disc).save(soft / f"{case_id}{SOFT['disc']}")
    Image.fromarray(cup).save(soft / f"{case_id}{SOFT['cup']}")


def asymmetric_case(h: int = 40, w: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image red in the top-left block only; disc soft map: rows 2..9 x cols 4..29, cup rows 4..7 x cols 10..19."""
    image = np.zeros((h, w, 3), np.uint8)
    image[: h // 4, : w // 2, 0] = 255
    disc = np.zeros((h, w), np.uint8)
    disc[2:10, 4:30] = 191  # 3 of 4 experts
    disc[10, 4:30] = 128  # only 2 of 4: below majority
    cup = np.zeros((h, w), np.uint8)
    cup[4:8, 10:20] = 255
    return image, disc, cup


def make_release(root: Path, n_train: int = 2, n_test: int = 1, **kwargs) -> Path:
    base = root / "Drishti-GS1_files"
    for n in range(n_train + n_test):
        write_case(base, "train" if n < n_train else "test", f"drishtiGS_{n + 1:03d}", *asymmetric_case(), **kwargs)
    return root


def test_threshold_and_label_map_by_hand():
    soft = np.array([[0, 64, 128], [191, 255, 128]], np.uint8)
    np.testing.assert_array_equal(drishti.soft_map_mask(soft, 128, Path("x")), [[0, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(drishti.soft_map_mask(soft, 127, Path("x")), [[0, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(drishti.soft_map_mask(soft, 191, Path("x")), [[0, 0, 0], [0, 1, 0]])
    disc = np.array([[1, 1, 0], [1, 1, 1]], bool)
    cup = np.array([[0, 1, 0], [0, 1, 0]], bool)
    np.testing.assert_array_equal(drishti.label_map(disc, cup, "c"), [[1, 2, 0], [1, 2, 1]])


def test_cup_outside_disc_warns_with_id():
    disc = np.array([[1, 0]], bool)
    cup = np.array([[0, 1]], bool)
    with pytest.warns(UserWarning, match="drishtiGS_042: 1 cup pixels"):
        labels = drishti.label_map(disc, cup, "drishtiGS_042")
    np.testing.assert_array_equal(labels, [[1, 2]])


def test_orientation_file_to_batch(tmp_path):
    """A non-square, asymmetric case keeps (H, W) row-major from PNG to DataLoader batch."""
    make_release(tmp_path / "raw")
    cfg = DrishtiConfig(root=str(tmp_path / "raw"), prepared_dir=str(tmp_path / "prep"), image_size=[40, 64], cache=False)
    batch = next(iter(torch.utils.data.DataLoader(build_train_dataset(cfg), batch_size=2)))
    assert batch["image"].shape == (2, 3, 40, 64) and batch["label"].shape == (2, 1, 40, 64)
    expected = np.zeros((40, 64), np.int64)
    expected[2:10, 4:30] = 1
    expected[4:8, 10:20] = 2
    np.testing.assert_array_equal(batch["label"][0, 0].numpy(), expected)
    red = np.zeros((40, 64), np.float32)
    red[:10, :32] = 1.0
    np.testing.assert_array_equal(batch["image"][0, 0].numpy(), red)
    assert batch["image"][0, 1:].abs().sum() == 0
    np.testing.assert_array_equal(batch["offset"][0].numpy(), [0, 0])
    np.testing.assert_array_equal(batch["full_shape"][0].numpy(), [40, 64])
    test = load_test_cases(cfg)
    assert [c["id"] for c in test] == ["drishtiGS_003"] and test[0]["spacing"] == (1.0, 1.0)
    np.testing.assert_array_equal(test[0]["label"], expected)
    assert test[0]["image"].dtype == np.float32 and test[0]["image"].shape == (3, 40, 64)


def test_batch_rows_are_the_first_moment_axis(tmp_path):
    """From PNG through the DataLoader into ResidualMomentLoss, order (p, 0) weights the image's rows.

    Square 48 x 48 case (so a transpose would not change the shape): disc rows 4..13 x cols 14..33, cup
    rows 6..11 x cols 19..28 -- centred along columns (14 + 33 = 19 + 28 = 47), off-centre (upwards) along
    rows. For an all-background prediction every foreground pixel has residual 1 in exactly one channel,
    so with C = (n - 23.5) / 48: L(2, 0) = 20 * sum_{rows 4..13} C^4, L(0, 2) = 10 * sum_{cols 14..33} C^4.
    """
    image = np.zeros((48, 48, 3), np.uint8)
    image[:, :, 1] = 100
    disc = np.zeros((48, 48), np.uint8)
    disc[4:14, 14:34] = 255
    cup = np.zeros((48, 48), np.uint8)
    cup[6:12, 19:29] = 255
    base = tmp_path / "raw" / "Drishti-GS1_files"
    write_case(base, "train", "drishtiGS_001", image, disc, cup)
    write_case(base, "test", "drishtiGS_002", image, disc, cup)
    cfg = DrishtiConfig(root=str(tmp_path / "raw"), prepared_dir=str(tmp_path / "prep"), image_size=[48, 48], cache=False)
    batch = next(iter(torch.utils.data.DataLoader(build_train_dataset(cfg), batch_size=1)))
    background = torch.zeros(1, 3, 48, 48, dtype=torch.float64)
    background[:, 0] = 1.0

    def rm(order):
        loss = ResidualMomentLoss([order], activation=None, coordinate_frame="volume")
        return loss(background, batch["label"], offset=batch["offset"], full_shape=batch["full_shape"]).item()

    row_sum = sum(((n - 23.5) / 48) ** 4 for n in range(4, 14))
    col_sum = sum(((n - 23.5) / 48) ** 4 for n in range(14, 34))
    bound = tol(torch.float64, 10 * 20)  # float64: sums over the 10 x 20 disc pixels
    assert rm((2, 0)) == pytest.approx(20 * row_sum, rel=bound)
    assert rm((0, 2)) == pytest.approx(10 * col_sum, rel=bound)
    factor = 2 * sum((n - 23.5) ** 4 for n in range(4, 14)) / sum((n - 23.5) ** 4 for n in range(14, 34))
    assert factor > 10  # the row offset dominates: transposed rows and columns would give 1 / factor
    assert rm((2, 0)) / rm((0, 2)) == pytest.approx(factor, rel=2 * bound)


def test_resize_halves_rows_and_columns(tmp_path):
    make_release(tmp_path / "raw")
    prepared = drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32))
    image, labels = drishti.load_prepared(drishti.prepared_cases(prepared, "train")[0])
    expected = np.zeros((20, 32), np.int64)  # nearest neighbour samples every second row and column
    expected[1:5, 2:15] = 1
    expected[2:4, 5:10] = 2
    np.testing.assert_array_equal(labels, expected)
    red = np.zeros((20, 32), np.float32)
    red[:5, :16] = 1.0  # 2x2 area averages of a block aligned to even rows and columns
    np.testing.assert_allclose(image[0], red)


def test_manifest_noop_and_refusal(tmp_path):
    make_release(tmp_path / "raw")
    out = drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["split"] == {"train": ["drishtiGS_001", "drishtiGS_002"], "test": ["drishtiGS_003"]}
    assert manifest["parameters"]["image_size"] == [20, 32] and manifest["parameters"]["threshold"] == 128
    case = manifest["cases"]["drishtiGS_001"]
    assert case["original_size"] == [40, 64] and case["split"] == "train"
    assert len(case["sources"]["disc"]["sha256"]) == 64
    stamp = (out / "labels" / "drishtiGS_001.png").stat().st_mtime_ns
    drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32))  # same parameters: no-op
    assert (out / "labels" / "drishtiGS_001.png").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=r"data.prepared_dir=<new folder>"):
        drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32), threshold=127)
    assert not list(tmp_path.glob(".prep.tmp*"))


def test_failed_preparation_leaves_nothing(tmp_path):
    make_release(tmp_path / "raw")
    (tmp_path / "raw/Drishti-GS1_files/Test/Images/drishtiGS_003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="drishtiGS_003.png"):
        drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32))
    assert not (tmp_path / "prep").exists() and not list(tmp_path.glob(".prep*"))


@pytest.mark.parametrize("variant", ["images_all", "test_gt", "nested"])
def test_layout_variants(tmp_path, variant):
    root = tmp_path / "raw"
    if variant == "nested":
        make_release(root / "Drishti-GS1_files")
    elif variant == "images_all":
        make_release(root, images_sub="ALL")
    else:
        base = root / "Drishti-GS1_files"
        write_case(base, "train", "drishtiGS_001", *asymmetric_case())
        write_case(base, "test", "drishtiGS_002", *asymmetric_case(), gt_name="GT")
    cases = drishti.list_cases(root)
    assert {c.split for c in cases} == {"train", "test"}
    assert all(c.image.is_file() and c.disc.is_file() and c.cup.is_file() for c in cases)


def _break(root: Path, what: str) -> str:
    base = root / "Drishti-GS1_files"
    disc = base / "Training/GT/drishtiGS_001/SoftMap/drishtiGS_001_ODsegSoftmap.png"
    if what == "missing_mask":
        disc.unlink()
        return "drishtiGS_001_ODsegSoftmap.png"
    if what == "mask_without_image":
        (base / "Training/Images/drishtiGS_002.png").unlink()
        return "drishtiGS_002.png is absent"
    if what == "corrupt_png":
        disc.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return "corrupt"
    if what == "size_mismatch":
        Image.fromarray(np.zeros((30, 64), np.uint8)).save(disc)
        return "30x64 but image"
    if what == "empty_softmap":
        Image.fromarray(np.full((40, 64), 64, np.uint8)).save(disc)
        return "no pixel above threshold 128"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing_mask", "mask_without_image", "corrupt_png", "size_mismatch", "empty_softmap"])
def test_bad_input_names_the_file(tmp_path, what):
    make_release(tmp_path / "raw")
    message = _break(tmp_path / "raw", what)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        drishti.prepare(tmp_path / "raw", tmp_path / "prep", (20, 32))


def test_missing_root_explains_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="RMSEG_DATA_ROOT"):
        drishti.prepare(tmp_path / "nowhere", tmp_path / "prep")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Drishti-GS1_files"):
        drishti.list_cases(tmp_path / "empty")


def test_one_pixel_smaller_softmap_is_accepted(tmp_path):
    """The release's soft maps are often 1 px smaller than their images: tolerated, resized separately."""
    image, disc, cup = asymmetric_case()
    write_case(tmp_path / "Drishti-GS1_files", "train", "drishtiGS_001", image, disc[:-1, :-1], cup[:-1, :-1])
    write_case(tmp_path / "Drishti-GS1_files", "test", "drishtiGS_002", image, disc, cup)
    case = drishti.list_cases(tmp_path)[0]
    full, labels = drishti.read_case(case, 128, max_size_mismatch=2)
    assert full.shape == (40, 64, 3) and labels.shape == (39, 63)
    with pytest.raises(ValueError, match="tolerance 0 px"):
        drishti.read_case(case, 128, max_size_mismatch=0)


# --- the real release (skipped when ../shared/data is absent) ---------------------------------------

REAL_SIZE = (128, 128)  # 101 cases prepare in about 6 s at 128 px (about 30 s at the paper's 512)


@pytest.fixture(scope="session")
def real_prepared(shared_data, tmp_path_factory):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cup lies inside the disc in every case: no warning expected
        return drishti.prepare(shared_data / "drishti-gs1", tmp_path_factory.mktemp("gs") / "prep", REAL_SIZE)


@pytest.mark.realdata
def test_real_release_prepares_all_101_cases(real_prepared, shared_data):
    manifest = json.loads((real_prepared / MANIFEST).read_text())
    assert len(manifest["split"]["train"]) == 50 and len(manifest["split"]["test"]) == 51
    assert len(manifest["cases"]) == 101
    assert len(list((real_prepared / "labels").glob("*.png"))) == 101
    for case_id in ("drishtiGS_002", "drishtiGS_055", "drishtiGS_101"):  # test, train, train
        record = manifest["cases"][case_id]
        split = "Training/GT" if record["split"] == "train" else "Test/Test_GT"
        soft_dir = shared_data / "drishti-gs1/Drishti-GS1_files" / split / case_id / "SoftMap"
        disc = np.asarray(Image.open(soft_dir / f"{case_id}_ODsegSoftmap.png")) >= 191  # 3 or 4 experts
        cup = np.asarray(Image.open(soft_dir / f"{case_id}_cupsegSoftmap.png")) >= 191
        direct = (disc.astype(np.uint8) + cup).astype(np.uint8)  # cup inside disc: 1 disc, 2 cup
        # nearest-neighbour resize with PIL of the directly thresholded label map
        direct = np.asarray(Image.fromarray(direct).resize(REAL_SIZE[::-1], Image.Resampling.NEAREST))
        _, labels = drishti.load_prepared({"image": str(real_prepared / "images" / f"{case_id}.png"),
                                           "label": str(real_prepared / "labels" / f"{case_id}.png")})
        np.testing.assert_array_equal(labels, direct)
        assert set(np.unique(labels)) == {0, 1, 2}


@pytest.mark.realdata
def test_real_train_dataset_and_test_cases(real_prepared, shared_data):
    cfg = DrishtiConfig(root=str(shared_data / "drishti-gs1"), prepared_dir=str(real_prepared), image_size=list(REAL_SIZE))
    train = build_train_dataset(cfg)
    assert len(train) == 50 and train[0]["image"].shape == (3, *REAL_SIZE)
    test = load_test_cases(cfg)
    assert len(test) == 51 and test[0]["label"].shape == REAL_SIZE
