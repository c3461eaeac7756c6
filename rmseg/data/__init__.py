"""Datasets: Drishti-GS, LA 2018 and their synthetic stand-ins.

``build_train_dataset(cfg)`` and ``load_test_cases(cfg)`` take the data config node (DictConfig,
dict or :mod:`rmseg.data.config` dataclass). Synthetic stand-ins are written on first use into
``cfg.root``; the Drishti-GS release (and the raw LA release) is prepared on first use into
``cfg.prepared_dir`` (default ``data/prepared/<name-and-parameters>`` under ``$RMSEG_ROOT`` or the
current directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset
from monai.transforms import Compose

from rmseg.data import drishti, la
from rmseg.data.config import DataConfig, DrishtiConfig, LAConfig, SyntheticConfig, as_data_config
from rmseg.data.datasets import DrishtiGS, LA2018, SegmentationDataset, dataset_for
from rmseg.data.resample import factors_of

#: ``$RMSEG_ROOT/data``, else ``data/`` of the current directory (as ``paths.data_dir``)
DATA_DIR = Path(os.environ.get("RMSEG_ROOT") or ".") / "data"

__all__ = [
    "DATA_DIR",
    "DataConfig",
    "DrishtiConfig",
    "DrishtiGS",
    "LA2018",
    "LAConfig",
    "SegmentationDataset",
    "SyntheticConfig",
    "as_data_config",
    "build_train_dataset",
    "check_test_split",
    "data_root",
    "dataset_for",
    "default_prepared_dir",
    "load_test_cases",
    "prepare",
]


def default_prepared_dir(cfg: Any) -> Path:
    """``DATA_DIR/prepared/<name>_<source>_<parameters>``, where a data config without ``prepared_dir`` prepares."""
    return dataset_for(cfg).default_prepared_dir


def data_root(cfg: Any) -> Path:
    """Root the readers use (:meth:`~rmseg.data.datasets.SegmentationDataset.root`): the synthetic
    stand-in is written first if needed; for LA, a raw challenge release is prepared into UA-MT's h5
    layout under ``prepared_dir``."""
    return dataset_for(cfg).root()


def prepare(cfg: Any) -> Path:
    """Root of the ready-to-read data: the prepared Drishti-GS folder or the UA-MT LA root."""
    return dataset_for(cfg).prepare()


@contextmanager
def transform_errors() -> Iterator[None]:
    """Re-raise the error inside MONAI's generic ``RuntimeError("applying transform ...")`` wrappers (the
    one naming the file and the problem) instead of the wrappers."""
    try:
        yield
    except RuntimeError as err:
        cause: BaseException = err
        while isinstance(cause, RuntimeError) and str(cause).startswith("applying transform") and cause.__cause__:
            cause = cause.__cause__
        if cause is err:
            raise
        raise cause from None


class _Dataset(Dataset):
    def _transform(self, index: int) -> Any:
        with transform_errors():
            return super()._transform(index)


class _CacheDataset(CacheDataset):
    def _load_cache_item(self, idx: int) -> Any:
        with transform_errors():
            return super()._load_cache_item(idx)

    def _transform(self, index: int) -> Any:
        with transform_errors():
            return super()._transform(index)


def build_train_dataset(cfg: Any) -> Dataset:
    """Training samples ``{image (C, *S) float32, label (1, *S) int64, offset, full_shape, id}``.

    With ``cfg.cache`` the deterministic part (reading) is held in memory by MONAI's CacheDataset.
    Random transforms are seeded with ``cfg.seed``. A case that cannot be read raises the reader's error
    (naming the file), not MONAI's generic "applying transform".
    """
    dataset = dataset_for(cfg)
    cfg = dataset.cfg
    items = dataset.split(dataset.prepare(), "train")
    fixed, random = dataset.transforms()
    transform = Compose([*fixed.transforms, *random.transforms])
    transform.set_random_state(seed=cfg.seed)
    if cfg.cache:
        return _CacheDataset(items, transform, progress=False, num_workers=max(cfg.num_workers, 1),
                             copy_cache=dataset.copy_cache)
    return _Dataset(items, transform)


def load_test_cases(cfg: Any) -> list[dict[str, Any]]:
    """Whole test cases ``{id, image (C, *S) float32, label (*S) int64, spacing, downsample}`` (numpy).

    Images and labels are on the dataset's grid; ``downsample`` (factors per axis) tells evaluation to
    predict on the coarser network grid and resample the probabilities back (``rmseg.data.resample``).
    """
    dataset = dataset_for(cfg)
    factors = factors_of(dataset.cfg.downsample, dataset.cfg.spatial_dims)
    cases = []
    for case in dataset.split(dataset.prepare(), "test"):
        image, label = dataset.read(case)
        cases.append({"id": case["id"], "image": image, "label": label, "spacing": dataset.spacing,
                      "downsample": factors})
    return cases


def check_test_split(cfg: Any) -> None:
    """Read every test case once (the checks of :func:`load_test_cases`: list, files, finite images, label
    values), so that a bad test split fails before training rather than after it."""
    load_test_cases(cfg)
