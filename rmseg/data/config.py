"""Dataclass schemas of the data config group (``configs/data/*.yaml``; YAML keys == field names).

Hydra registers these in its ConfigStore; plain :class:`omegaconf.DictConfig` nodes with the same keys
are accepted everywhere too (see :func:`as_data_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rmseg.data.resample import factors_of

SOURCES = ("real", "synthetic")


@dataclass
class SyntheticConfig:
    """Size of a synthetic stand-in (generated on first use into ``root``)."""

    num_train: int = 12
    num_test: int = 8
    shape: list[int] = field(default_factory=lambda: [256, 256])
    seed: int = 0


@dataclass
class DataConfig:
    """Keys common to every dataset.

    ``downsample``: integer factor per spatial axis (None: none). The network trains and predicts on a
    grid that many times coarser (block-mean images, majority labels); test predictions are resampled
    back and scored on the dataset's own grid, so distances keep its units (``rmseg.data.resample``).
    """

    name: str = "gs"
    source: str = "real"
    root: str = "data/drishti-gs1"
    prepared_dir: str | None = None
    spatial_dims: int = 2
    in_channels: int = 3
    num_classes: int = 3
    structures: dict[str, list[int]] = field(default_factory=dict)
    batch_size: int = 4
    num_workers: int = 0
    cache: bool = True
    seed: int = 0
    downsample: list[int] | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class DrishtiConfig(DataConfig):
    """Drishti-GS1: 2D RGB fundus images, labels background 0 / disc outside cup 1 / cup 2.

    ``threshold``: a pixel belongs to a structure when its 5-level soft map (0, 64, 128, 191, 255 =
    number of the 4 experts who marked it) is ``> threshold``. Default 128 = majority (at least 3 of
    the 4 experts, soft >= 191); 127 would also take the 2-of-4 level (128), i.e. half, not a majority.
    ``flip``: random horizontal/vertical flips in training (the paper states no augmentation: off).
    ``max_size_mismatch``: the release's soft maps are up to 1 pixel smaller than their images; larger
    differences are an error.
    """

    name: str = "gs"
    root: str = "data/drishti-gs1"
    spatial_dims: int = 2
    in_channels: int = 3
    num_classes: int = 3
    structures: dict[str, list[int]] = field(default_factory=lambda: {"disc": [1, 2], "cup": [2]})
    batch_size: int = 4
    image_size: list[int] = field(default_factory=lambda: [512, 512])
    threshold: int = 128
    flip: bool = False
    max_size_mismatch: int = 2


@dataclass
class LAConfig(DataConfig):
    """LA 2018 (UA-MT preprocessed h5): 3D MRI, labels background 0 / atrium 1.

    Training: the first ``num_train`` ids of ``train.list`` (16 in the paper's protocol), random
    axial 90-degree rotation and flips, random ``patch_size`` crop (padded when smaller).
    Test: every id of ``test.list``, whole volumes. ``margin``: range ``[low, high)`` of the in-plane
    bounding-box margin (voxels) drawn per case and side when preparing the raw challenge release
    (UA-MT: 10..20; slices are kept whole).
    """

    name: str = "la"
    root: str = "data/la2018"
    spatial_dims: int = 3
    in_channels: int = 1
    num_classes: int = 2
    structures: dict[str, list[int]] = field(default_factory=lambda: {"atrium": [1]})
    batch_size: int = 2
    patch_size: list[int] = field(default_factory=lambda: [112, 112, 80])
    num_train: int = 16
    margin: list[int] = field(default_factory=lambda: [10, 20])
    synthetic: SyntheticConfig = field(
        default_factory=lambda: SyntheticConfig(num_train=8, num_test=4, shape=[96, 96, 48])
    )


CONFIG_CLASSES: dict[str, type[DataConfig]] = {"gs": DrishtiConfig, "la": LAConfig}


def as_data_config(cfg: Any) -> DrishtiConfig | LAConfig:
    """Validated dataclass from a dataclass, dict or DictConfig data node (interpolations resolved)."""
    if isinstance(cfg, DataConfig):
        data = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        if isinstance(data["synthetic"], SyntheticConfig):
            data["synthetic"] = {f.name: getattr(data["synthetic"], f.name) for f in fields(SyntheticConfig)}
    elif isinstance(cfg, DictConfig):
        data = OmegaConf.to_container(cfg, resolve=True)
    elif isinstance(cfg, dict):
        data = dict(cfg)
    else:
        raise TypeError(f"data config must be a DataConfig, dict or DictConfig, got {type(cfg).__name__}")
    name = data.get("name")
    if name not in CONFIG_CLASSES:
        raise ValueError(f"data.name={name!r} is unknown: use one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"data config keys {unknown} are unknown for data.name={name!r}: valid keys are {sorted(known)}")
    synthetic = data.pop("synthetic", None)
    out = cls(**data)
    if synthetic is not None:
        out.synthetic = synthetic if isinstance(synthetic, SyntheticConfig) else SyntheticConfig(**synthetic)
    validate(out)
    return out


def _positive_ints(value: Any, length: int, key: str) -> None:
    if len(value) != length or any(int(v) != v or v < 1 for v in value):
        raise ValueError(f"data.{key}={list(value)} must be {length} positive integers")


def validate(cfg: DrishtiConfig | LAConfig) -> None:
    """Raise ValueError naming the bad key and value."""
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r} must be one of {SOURCES}")
    for key in ("batch_size", "in_channels", "num_classes"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key}={getattr(cfg, key)} must be >= 1")
    if cfg.num_workers < 0:
        raise ValueError(f"data.num_workers={cfg.num_workers} must be >= 0")
    for structure, labels in cfg.structures.items():
        bad = [v for v in labels if not 0 < v < cfg.num_classes]
        if bad or not labels:
            raise ValueError(
                f"data.structures.{structure}={list(labels)}: label ids must lie in 1..{cfg.num_classes - 1}"
            )
    factors_of(cfg.downsample, cfg.spatial_dims)
    syn = cfg.synthetic
    if syn.num_train < 1 or syn.num_test < 1:
        raise ValueError(f"data.synthetic num_train={syn.num_train}, num_test={syn.num_test} must be >= 1")
    _positive_ints(syn.shape, cfg.spatial_dims, "synthetic.shape")
    if isinstance(cfg, DrishtiConfig):
        if cfg.spatial_dims != 2 or cfg.in_channels != 3 or cfg.num_classes != 3:
            raise ValueError("Drishti-GS is 2D RGB with 3 classes: spatial_dims=2, in_channels=3, num_classes=3")
        _positive_ints(cfg.image_size, 2, "image_size")
        if not 0 <= cfg.threshold < 255:
            raise ValueError(
                f"data.threshold={cfg.threshold} must be in [0, 254] (soft map > threshold; 128 = majority, at least 3 of 4 experts)"
            )
        if cfg.max_size_mismatch < 0:
            raise ValueError(f"data.max_size_mismatch={cfg.max_size_mismatch} must be >= 0")
    else:
        if cfg.spatial_dims != 3 or cfg.in_channels != 1 or cfg.num_classes != 2:
            raise ValueError("LA is 3D single-channel with 2 classes: spatial_dims=3, in_channels=1, num_classes=2")
        _positive_ints(cfg.patch_size, 3, "patch_size")
        if cfg.num_train < 1:
            raise ValueError(f"data.num_train={cfg.num_train} must be >= 1 (the paper's protocol uses 16)")
        if len(cfg.margin) != 2 or not 0 <= cfg.margin[0] < cfg.margin[1]:
            raise ValueError(f"data.margin={list(cfg.margin)} must be [low, high) with 0 <= low < high (UA-MT: [10, 20])")
