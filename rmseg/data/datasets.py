"""One object per dataset: where its data comes from, how it is prepared, split, read and transformed.

:func:`dataset_for` picks the object of a data config: :class:`DrishtiGS` (Table 1) or :class:`LA2018`
(Table 2). The synthetic stand-ins are not datasets of their own but a source of each
(``source: synthetic``): written on first use into ``root``, then prepared and read exactly like the real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from monai.transforms import Compose

from rmseg.data import drishti, la
from rmseg.data.config import DataConfig, DrishtiConfig, LAConfig, as_data_config
from rmseg.data.synthetic import write_gs_synthetic, write_la_synthetic
from rmseg.data.transforms import drishti_transforms, la_transforms

class SegmentationDataset:
    """A dataset under one data config ``cfg``: :meth:`prepare` (the root ready to read, written or prepared
    on first use), :meth:`split` (case items of ``"train"`` / ``"test"``), :meth:`read` (one test case as
    arrays) and :meth:`transforms` (the training pipeline: deterministic part, random part)."""

    config_type: ClassVar[type[DataConfig]]
    spacing: ClassVar[tuple[float, ...]]
    #: whether the cached training items are copied per sample (False: the random part only reads them)
    copy_cache: ClassVar[bool] = True

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    @property
    def default_prepared_dir(self) -> Path:
        """``rmseg.data.DATA_DIR/prepared/<name>_<source>_<parameters>`` (the YAML configs name the same folder)."""
        from rmseg import data  # the package's DATA_DIR, read when used (callers and tests may set it)

        return data.DATA_DIR / "prepared" / f"{self.cfg.name}_{self.cfg.source}_{self.preparation_name()}"

    @property
    def prepared_dir(self) -> Path:
        """``cfg.prepared_dir``, else :attr:`default_prepared_dir`."""
        return Path(self.cfg.prepared_dir) if self.cfg.prepared_dir else self.default_prepared_dir

    def preparation_name(self) -> str:
        """The preparation's parameters, as they appear in the default prepared folder's name."""
        raise NotImplementedError

    def write_synthetic(self, root: Path) -> None:
        """Write the synthetic stand-in under ``root`` (nothing when it is there already)."""
        raise NotImplementedError

    def root(self) -> Path:
        """Root of the dataset's files in their published layout: the synthetic stand-in is written there
        first if needed."""
        root = Path(self.cfg.root)
        if self.cfg.source == "synthetic":
            self.write_synthetic(root)
        return root

    def prepare(self) -> Path:
        """Root of the ready-to-read data (:meth:`split` lists its cases)."""
        return self.root()

    def split(self, root: Path, split: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def read(self, case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(C, *S)`` float32 and labels ``(*S)`` int64 of one case item of :meth:`split`."""
        raise NotImplementedError

    def transforms(self) -> tuple[Compose, Compose]:
        raise NotImplementedError


class DrishtiGS(SegmentationDataset):
    """Drishti-GS1 (Table 1): the official release (or its synthetic stand-in) resized and thresholded once
    into ``prepared_dir``; official split 50 train / 51 test."""

    config_type = DrishtiConfig
    spacing = (1.0, 1.0)

    def preparation_name(self) -> str:
        cfg = self.cfg
        params = f"{cfg.image_size[0]}x{cfg.image_size[1]}_t{cfg.threshold}"
        if cfg.source == "synthetic":
            syn = cfg.synthetic
            params = f"{syn.num_train}-{syn.num_test}_{'x'.join(map(str, syn.shape))}_s{syn.seed}_{params}"
        return params

    def write_synthetic(self, root: Path) -> None:
        syn = self.cfg.synthetic
        write_gs_synthetic(root, syn.num_train, syn.num_test, tuple(syn.shape), syn.seed)

    def prepare(self) -> Path:
        cfg = self.cfg
        return drishti.prepare(self.root(), self.prepared_dir, tuple(cfg.image_size), cfg.threshold,
                               cfg.max_size_mismatch)

    def split(self, root: Path, split: str) -> list[dict[str, Any]]:
        return drishti.prepared_cases(root, split)

    def read(self, case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return drishti.load_prepared(case)

    def transforms(self) -> tuple[Compose, Compose]:
        return drishti_transforms(self.cfg.flip, self.cfg.downsample)


class LA2018(SegmentationDataset):
    """LA 2018 (Table 2): UA-MT's preprocessed h5 files (or the synthetic stand-in in that layout); a raw
    challenge release under ``root`` is prepared on first use with UA-MT's preprocessing. Trains on the
    first ``num_train`` ids of ``train.list``, tests on ``test.list``."""

    config_type = LAConfig
    spacing = (1.0, 1.0, 1.0)
    copy_cache = False

    def preparation_name(self) -> str:
        return f"m{self.cfg.margin[0]}-{self.cfg.margin[1]}_s{self.cfg.seed}"

    def write_synthetic(self, root: Path) -> None:
        syn = self.cfg.synthetic
        write_la_synthetic(root, syn.num_train, syn.num_test, tuple(syn.shape), syn.seed)

    def root(self) -> Path:
        """UA-MT's h5 layout: ``cfg.root`` itself, or a raw release under it prepared into ``prepared_dir``."""
        root = super().root()
        if not la.is_h5_layout(root) and la.find_raw_cases(root):
            return la.prepare_raw(root, self.prepared_dir, tuple(self.cfg.margin), self.cfg.seed)
        return root

    def split(self, root: Path, split: str) -> list[dict[str, Any]]:
        return la.split_cases(root, split, self.cfg.num_train) if split == "train" else la.split_cases(root, split)

    def read(self, case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        image, label = la.read_h5(case["path"])
        return image[None], label.astype("int64")

    def transforms(self) -> tuple[Compose, Compose]:
        return la_transforms(self.cfg.patch_size, self.cfg.downsample)


DATASETS: tuple[type[SegmentationDataset], ...] = (DrishtiGS, LA2018)


def dataset_for(cfg: Any) -> SegmentationDataset:
    """The dataset object of a data config node (DictConfig, dict or :mod:`rmseg.data.config` dataclass)."""
    cfg = as_data_config(cfg)
    for dataset in DATASETS:
        if isinstance(cfg, dataset.config_type):
            return dataset(cfg)
    raise ValueError(f"no dataset for data config {type(cfg).__name__}: use one of {[d.__name__ for d in DATASETS]}")
