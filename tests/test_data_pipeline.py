"""Training pipelines: crop offsets, augmentation consistency, synthetic stand-ins to batches, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureTyped, RandFlipd, RandRotate90d

from rmseg.data import DrishtiConfig, LAConfig, as_data_config, build_train_dataset, load_test_cases
from rmseg.data.transforms import RandCropWithOffsetd, la_transforms


def _sample(shape):
    image = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)
    return {"id": "x", "image": image, "label": (image.long() % 3)}


@pytest.mark.parametrize("shape", [(9, 7, 5), (3, 12, 4)])
def test_crop_offset_points_at_the_patch(shape):
    crop = RandCropWithOffsetd((4, 6, 5))
    crop.set_random_state(seed=3)
    data = _sample(shape)
    pad = [max(p - s, 0) for s, p in zip(shape, (4, 6, 5))]
    full = np.pad(data["image"][0].numpy(), [(p // 2, p - p // 2) for p in pad])
    starts = set()
    for _ in range(30):
        out = crop(data)
        o, fs = out["offset"].tolist(), out["full_shape"].tolist()
        assert fs == list(full.shape) and out["image"].shape == out["label"].shape == (1, 4, 6, 5)
        np.testing.assert_array_equal(out["image"][0].numpy(), full[o[0]:o[0] + 4, o[1]:o[1] + 6, o[2]:o[2] + 5])
        np.testing.assert_array_equal(out["label"], out["image"].long() % 3)
        starts.add(tuple(o))
    assert len(starts) > 3  # the start varies
    with pytest.raises(ValueError, match=r"patch_size=\[4, 6, 5\] does not match"):
        crop({"image": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 4)})


def test_la_augmentation_offset_in_the_augmented_volume():
    """The same seeded rotation/flip with a whole-volume 'crop' gives the full augmented volume:
    the patch of the real pipeline must lie at ``offset`` in it."""
    shape, patch = (10, 10, 3), (6, 4, 5)
    item = _sample(shape)
    for seed in range(12):
        pipelines = []
        for size in (patch, (10, 10, 5)):
            _, random = la_transforms(size)
            random.set_random_state(seed=seed)
            pipelines.append(random)
        out, full = pipelines[0](dict(item)), pipelines[1](dict(item))
        o = out["offset"].tolist()
        assert out["full_shape"].tolist() == list(full["image"].shape[1:]) == [10, 10, 5]
        np.testing.assert_array_equal(out["image"][0], full["image"][0][o[0]:o[0] + 6, o[1]:o[1] + 4, o[2]:o[2] + 5])
        np.testing.assert_array_equal(out["label"], out["image"].long() % 3)
        assert out["label"].dtype == torch.int64 and type(out["image"]) is torch.Tensor


@pytest.mark.parametrize("patch", [(4, 6, 3), (12, 5, 7)])
def test_la_view_augmentation_equals_monai_rotations_and_flips(patch):
    """The view-based pipeline draws as MONAI's RandRotate90d/RandFlipd and gives the same patches, bitwise."""
    monai_random = Compose([
        RandRotate90d(("image", "label"), prob=1.0, max_k=4, spatial_axes=(0, 1)),
        RandFlipd(("image", "label"), prob=0.5, spatial_axis=0),
        RandFlipd(("image", "label"), prob=0.5, spatial_axis=1),
        EnsureTyped(("image", "label"), data_type="tensor", track_meta=False),
        RandCropWithOffsetd(patch),
    ])
    _, views = la_transforms(patch)
    item = _sample((10, 7, 5))
    cached = {"id": "x", "image": item["image"].numpy(), "label": item["label"].numpy().astype(np.uint8)}
    for array in (cached["image"], cached["label"]):
        array.flags.writeable = False
    for seed in range(6):
        monai_random.set_random_state(seed=seed)
        views.set_random_state(seed=seed)
        for _ in range(8):
            want, got = monai_random(dict(item)), views(dict(cached))
            for key in ("image", "label", "offset", "full_shape"):
                assert torch.equal(got[key], want[key]), key
            assert got["label"].dtype == torch.int64 and got["image"].is_contiguous()
            assert not np.shares_memory(got["image"].numpy(), cached["image"])  # the patch is a copy
    np.testing.assert_array_equal(cached["image"], item["image"].numpy())  # the cache is untouched


def test_la_augmentation_draws_all_8_axial_symmetries():
    """A marker voxel ends up at each of the 8 images of (0, 1) under the square's symmetry group."""
    image = torch.zeros(1, 4, 4, 1)
    image[0, 0, 1, 0] = 1
    _, random = la_transforms((4, 4, 1))
    random.set_random_state(seed=0)
    seen = {tuple(torch.nonzero(random({"id": "x", "image": image, "label": image.long()})["image"][0])[0, :2].tolist())
            for _ in range(200)}
    assert seen == {(0, 1), (1, 0), (0, 2), (2, 0), (3, 1), (1, 3), (3, 2), (2, 3)}
    # slices (axis 2) are never moved
    _, random = la_transforms((4, 4, 2))
    random.set_random_state(seed=0)
    volume = torch.arange(2.0).reshape(1, 1, 1, 2).expand(1, 4, 4, 2).clone()
    for _ in range(10):
        out = random({"id": "x", "image": volume, "label": volume.long()})
        assert out["image"][0, :, :, 1].eq(1).all() and out["image"][0, :, :, 0].eq(0).all()


def test_synthetic_la_files_to_batches(tmp_path):
    cfg = LAConfig(source="synthetic", root=str(tmp_path / "syn"), num_train=3, patch_size=[32, 32, 16], batch_size=2)
    cfg.synthetic.num_train, cfg.synthetic.num_test, cfg.synthetic.shape = 3, 2, [40, 36, 12]
    dataset = build_train_dataset(cfg)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["image"].shape == (2, 1, 32, 32, 16) and batch["label"].shape == (2, 1, 32, 32, 16)
    assert batch["image"].dtype == torch.float32 and batch["label"].dtype == torch.int64
    assert batch["offset"].shape == batch["full_shape"].shape == (2, 3) and batch["offset"].dtype == torch.int64
    assert batch["full_shape"][:, 2].eq(16).all()  # 12 slices padded to the patch's 16
    assert batch["id"] == ["SYNTH000", "SYNTH001"]
    test = load_test_cases(cfg)
    assert [c["id"] for c in test] == ["SYNTH003", "SYNTH004"]
    assert test[0]["image"].shape == (1, 40, 36, 12) and test[0]["label"].shape == (40, 36, 12)
    assert test[0]["label"].max() == 1 and test[0]["spacing"] == (1.0, 1.0, 1.0)
    # seeded: the same files again (the second call finds them and writes nothing)
    again = LAConfig(**{**cfg.__dict__, "synthetic": cfg.synthetic})
    np.testing.assert_array_equal(load_test_cases(again)[0]["image"], test[0]["image"])


def test_synthetic_gs_files_to_batches(tmp_path):
    from rmseg.config.compose import compose_config

    cfg = compose_config(["data=gs_synthetic", "name=t", f"paths.data_dir={tmp_path}", "data.image_size=[64,64]",
                          "data.synthetic.num_train=3", "data.synthetic.num_test=2", "data.synthetic.shape=[96,80]",
                          "data.flip=true"]).data
    assert cfg.root.startswith(str(tmp_path / "synthetic" / "gs_3-2_96x80_s0"))
    batch = next(iter(torch.utils.data.DataLoader(build_train_dataset(cfg), batch_size=3)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["label"].shape == (3, 1, 64, 64)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    for labels in batch["label"][:, 0]:  # disc and cup present, cup inside disc after the majority vote
        assert set(labels.unique().tolist()) == {0, 1, 2}
    assert (tmp_path / "prepared").is_dir() and len(load_test_cases(cfg)) == 2


def test_flip_moves_image_and_label_together(tmp_path):
    cfg = DrishtiConfig(source="synthetic", root=str(tmp_path / "s"), prepared_dir=str(tmp_path / "p"),
                        image_size=[32, 48], flip=True, cache=True)
    cfg.synthetic.num_train, cfg.synthetic.num_test, cfg.synthetic.shape = 1, 1, [64, 96]
    plain = DrishtiConfig(**{**cfg.__dict__, "flip": False})
    reference = build_train_dataset(plain)[0]
    dataset = build_train_dataset(cfg)
    flips = set()
    for _ in range(40):
        sample = dataset[0]
        for axes in ((), (1,), (2,), (1, 2)):
            image, label = reference["image"].flip(axes) if axes else reference["image"], reference["label"].flip(axes) if axes else reference["label"]
            if torch.equal(sample["image"], image):
                assert torch.equal(sample["label"], label)
                flips.add(axes)
    assert flips == {(), (1,), (2,), (1, 2)}


def test_yaml_configs_match_the_dataclasses(tmp_path, monkeypatch):
    from rmseg.config.compose import compose_config

    monkeypatch.delenv("RMSEG_DATA_ROOT", raising=False)
    for name, cls in (("gs", DrishtiConfig), ("la", LAConfig), ("gs_synthetic", DrishtiConfig), ("la_synthetic", LAConfig)):
        data = compose_config([f"data={name}", "name=t", f"paths.data_dir={tmp_path}"]).data
        parsed = as_data_config(data)
        assert isinstance(parsed, cls) and parsed.source == ("synthetic" if "synthetic" in name else "real")
        assert str(tmp_path) in parsed.prepared_dir
    la = compose_config(["data=la", "name=t", f"paths.data_dir={tmp_path}"]).data
    assert la.root == f"{tmp_path}/la2018" and la.prepared_dir == f"{tmp_path}/prepared/la_real_m10-20_s0"


def test_root_from_environment_and_override(tmp_path, monkeypatch):
    from rmseg.config.compose import compose_config

    monkeypatch.setenv("RMSEG_DATA_ROOT", str(tmp_path / "env"))
    assert compose_config(["data=gs", "name=t"]).data.root == f"{tmp_path}/env/drishti-gs1"
    assert compose_config(["data=gs", "name=t", "data.root=/else"]).data.root == "/else"
    monkeypatch.delenv("RMSEG_DATA_ROOT")
    assert compose_config(["data=la", "name=t", "paths.data_dir=/d"]).data.root == "/d/la2018"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 255}, r"data.threshold=255"),
        ({"image_size": [512]}, r"data.image_size=\[512\]"),
        ({"source": "fake"}, r"data.source='fake'"),
        ({"structures": {"cup": [3]}}, r"data.structures.cup=\[3\]"),
        ({"name": "brain"}, r"data.name='brain'"),
        ({"typo": 1}, r"\['typo'\] are unknown"),
    ],
)
def test_bad_config_values_are_named(change, message):
    base = {"name": "gs", "root": "r"}
    with pytest.raises(ValueError, match=message):
        as_data_config({**base, **change})


def test_bad_la_config_values_are_named():
    with pytest.raises(ValueError, match=r"data.patch_size=\[112, 112\]"):
        as_data_config({"name": "la", "patch_size": [112, 112]})
    with pytest.raises(ValueError, match=r"data.margin=\[20, 10\]"):
        as_data_config({"name": "la", "margin": [20, 10]})


def test_uncached_and_cached_give_the_same_samples(tmp_path):
    from rmseg.data import SyntheticConfig

    kwargs = dict(source="synthetic", root=str(tmp_path / "s"), num_train=2, patch_size=[24, 24, 8],
                  synthetic=SyntheticConfig(num_train=2, num_test=1, shape=[32, 28, 10]))
    cached, uncached = (build_train_dataset(LAConfig(cache=c, **kwargs)) for c in (True, False))
    for _ in range(3):
        a, b = cached[1], uncached[1]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["offset"], b["offset"])
    assert isinstance(cached.transform, Compose)
