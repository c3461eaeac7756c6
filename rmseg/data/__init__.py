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
from rmseg.data.resample import factors_of
from rmseg.data.config import DataConfig, DrishtiConfig, LAConfig, SyntheticConfig, as_data_config
from rmseg.data.synthetic import write_gs_synthetic, write_la_synthetic
from rmseg.data.transforms import drishti_transforms, la_transforms

#: ``$RMSEG_ROOT/data``, else ``data/`` of the current directory (as ``paths.data_dir``)
DATA_DIR = Path(os.environ.get("RMSEG_ROOT") or ".") / "data"

__all__ = [
    "DataConfig",
    "DrishtiConfig",
    "LAConfig",
    "SyntheticConfig",
    "as_data_config",
    "build_train_dataset",
    "check_test_split",
    "data_root",
    "load_test_cases",
]


def default_prepared_dir(cfg: DrishtiConfig | LAConfig) -> Path:
    """``DATA_DIR/prepared/<name>_<source>_<parameters>`` (the YAML configs name the same folder)."""
    if isinstance(cfg, DrishtiConfig):
        params = f"{cfg.image_size[0]}x{cfg.image_size[1]}_t{cfg.threshold}"
        if cfg.source == "synthetic":
            syn = cfg.synthetic
            params = f"{syn.num_train}-{syn.num_test}_{'x'.join(map(str, syn.shape))}_s{syn.seed}_{params}"
    else:
        params = f"m{cfg.margin[0]}-{cfg.margin[1]}_s{cfg.seed}"
    return DATA_DIR / "prepared" / f"{cfg.name}_{cfg.source}_{params}"


def data_root(cfg: Any) -> Path:
    """Root the readers use: the synthetic stand-in is written first if needed; for LA, a raw
    challenge release is prepared into UA-MT's h5 layout under ``prepared_dir``."""
    cfg = as_data_config(cfg)
    root = Path(cfg.root)
    syn = cfg.synthetic
    if cfg.source == "synthetic":
        write = write_gs_synthetic if isinstance(cfg, DrishtiConfig) else write_la_synthetic
        write(root, syn.num_train, syn.num_test, tuple(syn.shape), syn.seed)
    if isinstance(cfg, LAConfig) and not la.is_h5_layout(root) and la.find_raw_cases(root):
        return la.prepare_raw(root, _prepared_dir(cfg), tuple(cfg.margin), cfg.seed)
    return root


def _prepared_dir(cfg: DrishtiConfig | LAConfig) -> Path:
    return Path(cfg.prepared_dir) if cfg.prepared_dir else default_prepared_dir(cfg)


def prepare(cfg: Any) -> Path:
    """Root of the ready-to-read data: the prepared Drishti-GS folder or the UA-MT LA root."""
    cfg = as_data_config(cfg)
    root = data_root(cfg)
    if isinstance(cfg, DrishtiConfig):
        return drishti.prepare(root, _prepared_dir(cfg), tuple(cfg.image_size), cfg.threshold, cfg.max_size_mismatch)
    return root


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
    cfg = as_data_config(cfg)
    root = prepare(cfg)
    if isinstance(cfg, DrishtiConfig):
        items = drishti.prepared_cases(root, "train")
        fixed, random = drishti_transforms(cfg.flip, cfg.downsample)
    else:
        items = la.split_cases(root, "train", cfg.num_train)
        fixed, random = la_transforms(cfg.patch_size, cfg.downsample)
    transform = Compose([*fixed.transforms, *random.transforms])
    transform.set_random_state(seed=cfg.seed)
    if cfg.cache:
        # LA's random part only reads the cached (read-only) volumes through views: no per-sample copy needed
        return _CacheDataset(items, transform, progress=False, num_workers=max(cfg.num_workers, 1),
                            copy_cache=isinstance(cfg, DrishtiConfig))
    return _Dataset(items, transform)


def load_test_cases(cfg: Any) -> list[dict[str, Any]]:
    """Whole test cases ``{id, image (C, *S) float32, label (*S) int64, spacing, downsample}`` (numpy).

    Images and labels are on the dataset's grid; ``downsample`` (factors per axis) tells evaluation to
    predict on the coarser network grid and resample the probabilities back (``rmseg.data.resample``).
    """
    cfg = as_data_config(cfg)
    root = prepare(cfg)
    factors = factors_of(cfg.downsample, cfg.spatial_dims)
    cases = []
    if isinstance(cfg, DrishtiConfig):
        for case in drishti.prepared_cases(root, "test"):
            image, labels = drishti.load_prepared(case)
            cases.append({"id": case["id"], "image": image, "label": labels, "spacing": (1.0, 1.0), "downsample": factors})
    else:
        for case in la.split_cases(root, "test"):
            image, label = la.read_h5(case["path"])
            cases.append({"id": case["id"], "image": image[None], "label": label.astype("int64"),
                          "spacing": (1.0, 1.0, 1.0), "downsample": factors})
    return cases


def check_test_split(cfg: Any) -> None:
    """Read every test case once (the checks of :func:`load_test_cases`: list, files, finite images, label
    values), so that a bad test split fails before training rather than after it."""
    load_test_cases(cfg)
