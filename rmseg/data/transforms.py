"""MONAI dictionary transforms of the training pipelines.

Deterministic part (cached by MONAI's CacheDataset): load a case into ``image (C, *S)`` float32 and
``label (1, *S)`` int64 (LA: uint8 while cached, int64 once cropped). Random part: flips / axial
90-degree rotations, then for LA a random patch crop that records where the patch lies in the full
augmented volume (``offset``, ``full_shape``) for ``ResidualMomentLoss(coordinate_frame="volume")``.

LA's rotation and flips are MONAI's (same random draws) but return read-only numpy views, so only
the patch is ever copied: the cached volume is neither copied nor rotated per sample.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    Randomizable,
    RandRotate90d,
)

from rmseg.data.drishti import load_prepared
from rmseg.data.la import read_h5
from rmseg.data.resample import downsample_image, downsample_labels

KEYS = ("image", "label")


class LoadDrishtid(MapTransform):
    """Prepared Drishti-GS case ``{id, image: png path, label: png path}`` -> row-major tensors.

    Reads with PIL + numpy (no transpose), unlike MONAI's PILReader whose default reverses the axes.
    """

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image, labels = load_prepared(data)
        return {**data, "image": torch.from_numpy(image), "label": torch.from_numpy(labels)[None]}


class LoadH5d(MapTransform):
    """UA-MT case ``{id, path}`` -> read-only arrays ``image (1, H, W, D)`` float32, ``label (1, H, W, D)`` uint8.

    Read-only, so that a transform writing into a cached volume fails instead of corrupting the cache.
    """

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image, label = read_h5(Path(data["path"]))
        out = {"id": data["id"], "image": image[None], "label": label.astype(np.uint8, copy=False)[None]}
        for key in KEYS:
            out[key].flags.writeable = False
        return out


def _as_array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class Downsampled(MapTransform):
    """``image`` to block means and ``label`` to majority classes on a grid ``factors`` times coarser.

    Keeps each value's kind: tensors stay tensors, read-only arrays come back read-only.
    """

    def __init__(self, factors: Sequence[int], num_classes: int) -> None:
        super().__init__(KEYS)
        self.factors, self.num_classes = tuple(factors), num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key, fn in (("image", downsample_image), ("label", self._labels)):
            value = out[key]
            array = np.ascontiguousarray(fn(_as_array(value), self.factors))
            if isinstance(value, torch.Tensor):
                out[key] = torch.from_numpy(array)
            else:
                array.flags.writeable = bool(value.flags.writeable)
                out[key] = array
        return out

    def _labels(self, label: np.ndarray, factors: Sequence[int]) -> np.ndarray:
        return downsample_labels(label, factors, self.num_classes)


class AxialRotate90Viewd(RandRotate90d):
    """MONAI's ``RandRotate90d`` (same random draws, same result) as a numpy view: no copy is made."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        self.randomize()
        d = dict(data)
        axes = tuple(a + 1 for a in self.spatial_axes)  # channel first
        for key in self.key_iterator(d):
            d[key] = np.rot90(_as_array(d[key]), self._rand_k, axes) if self._do_transform else _as_array(d[key])
        return d


class FlipViewd(RandFlipd):
    """MONAI's ``RandFlipd`` (same random draws, same result) as a numpy view: no copy is made."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        self.randomize(None)
        d = dict(data)
        axes = tuple(a + 1 for a in np.atleast_1d(self.flipper.spatial_axis))
        for key in self.key_iterator(d):
            d[key] = np.flip(_as_array(d[key]), axes) if self._do_transform else _as_array(d[key])
        return d


class FullFramed(MapTransform):
    """Whole-image sample: ``offset`` zeros and ``full_shape`` the image's spatial shape."""

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        shape = data["image"].shape[1:]
        return {
            **data,
            "offset": torch.zeros(len(shape), dtype=torch.int64),
            "full_shape": torch.tensor(tuple(shape), dtype=torch.int64),
        }


class RandCropWithOffsetd(Randomizable, MapTransform):
    """Random ``patch_size`` crop of ``image`` and ``label``, zero-padded first where smaller.

    Padding is split evenly before/after each axis. Adds ``offset`` (patch start, int64 ``(ndim,)``) and
    ``full_shape`` (shape of the padded full volume) so that ``full[offset + idx] == patch[idx]``.
    MONAI's RandSpatialCropd does not return its start, hence this transform; it also copies only the
    patch instead of padding the whole volume first (about 25 ms saved per 112x112x80 LA sample).
    Takes tensors or arrays (views included); returns new contiguous tensors that share no memory with the input.
    """

    def __init__(self, patch_size: Sequence[int]) -> None:
        MapTransform.__init__(self, KEYS)
        if any(int(p) < 1 for p in patch_size):
            raise ValueError(f"patch_size={list(patch_size)} must be positive integers")
        self.patch_size = tuple(int(p) for p in patch_size)
        self._start: tuple[int, ...] = ()

    def randomize(self, shape: Sequence[int]) -> None:
        self._start = tuple(int(self.R.randint(0, s - p + 1)) for s, p in zip(shape, self.patch_size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        shape = tuple(out["image"].shape[1:])
        if len(shape) != len(self.patch_size):
            raise ValueError(f"patch_size={list(self.patch_size)} does not match the image's spatial shape {shape}")
        before = [max(p - s, 0) // 2 for s, p in zip(shape, self.patch_size)]
        full_shape = tuple(max(s, p) for s, p in zip(shape, self.patch_size))
        self.randomize(full_shape)
        # the patch window in the unpadded volume (src) and where that part lands in the patch (dst)
        src, dst = [slice(None)], [slice(None)]
        for start, b, s, p in zip(self._start, before, shape, self.patch_size):
            lo, hi = max(start - b, 0), min(start - b + p, s)
            src.append(slice(lo, hi))
            dst.append(slice(lo - (start - b), hi - (start - b)))
        for key in KEYS:
            volume = _as_array(out[key])
            if full_shape == shape:
                patch = np.array(volume[tuple(src)], order="C")  # always a copy
            else:
                patch = np.zeros((volume.shape[0], *self.patch_size), dtype=volume.dtype)
                patch[tuple(dst)] = volume[tuple(src)]
            out[key] = torch.from_numpy(patch)
        out["offset"] = torch.tensor(self._start, dtype=torch.int64)
        out["full_shape"] = torch.tensor(full_shape, dtype=torch.int64)
        return out


def _to_plain() -> EnsureTyped:
    return EnsureTyped(keys=KEYS, data_type="tensor", track_meta=False)


def _loaded(loader: MapTransform, downsample: Sequence[int] | None, num_classes: int) -> Compose:
    """The deterministic part: ``loader``, then :class:`Downsampled` when any factor is above 1."""
    coarse = [Downsampled(downsample, num_classes)] if downsample and any(f > 1 for f in downsample) else []
    return Compose([loader, *coarse])


def drishti_transforms(flip: bool, downsample: Sequence[int] | None = None) -> tuple[Compose, Compose]:
    """(deterministic, random) parts for Drishti-GS; random part: flips along rows and columns if ``flip``.
    ``downsample``: factors of the network grid (``Downsampled``), None for none."""
    random = [RandFlipd(KEYS, prob=0.5, spatial_axis=0), RandFlipd(KEYS, prob=0.5, spatial_axis=1)] if flip else []
    return _loaded(LoadDrishtid(), downsample, 3), Compose([*random, FullFramed(), _to_plain()])


def la_transforms(patch_size: Sequence[int], downsample: Sequence[int] | None = None) -> tuple[Compose, Compose]:
    """(deterministic, random) parts for LA; ``downsample`` as for :func:`drishti_transforms`.

    Random part: axial (axes 0, 1) rotation by k * 90 degrees, k uniform in 0..3, then flips along
    each axial axis with probability 1/2 (together: the 8 symmetries of the square, uniformly), then
    the patch crop with its offset.
    """
    random = [
        AxialRotate90Viewd(KEYS, prob=1.0, max_k=4, spatial_axes=(0, 1)),
        FlipViewd(KEYS, prob=0.5, spatial_axis=0),
        FlipViewd(KEYS, prob=0.5, spatial_axis=1),
        RandCropWithOffsetd(patch_size),
        CastToTyped("label", dtype=torch.int64),
        _to_plain(),
    ]
    return _loaded(LoadH5d(), downsample, 2), Compose(random)
