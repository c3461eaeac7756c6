"""Exact Euclidean distance maps of batched multi-class masks, for the distance-map losses.

Every map function takes a binary ``(B, C, *S)`` mask (numpy array or torch tensor, bool or 0/1)
and returns maps of the same shape and kind, float32 (:func:`two_sided_distance_map`: float64); a
tensor comes back on its own device. Maps are computed on the CPU, without gradient, once per
``(b, c)`` slice, with an exact EDT: the ``edt`` package (Silversmith, seung-lab) when installed,
otherwise ``scipy.ndimage.distance_transform_edt``. ``benchmarks/losses.py`` times both; they give
the same values (tested).

One transfer per step: a loss call moves its masks device-to-host at most ONCE. A tensor argument
makes one device-to-host copy (:func:`_to_host`, the module's only one) and its maps one
host-to-device copy back; a loss that needs several masks (the Hausdorff loss: ground truth and
thresholded prediction) moves them together with :func:`masks_to_host`, passes the host arrays to
the map functions, and returns all maps with :func:`maps_to_device`.

Conventions (pixel units, spacing 1; rows/columns/slices as in the rest of rmseg):

* ``d_in(x)``: for a foreground voxel, the distance to the nearest background voxel (>= 1);
  0 on the background.
* ``d_out(x)``: for a background voxel, the distance to the nearest foreground voxel; 0 on the
  foreground.
* Ground-truth maps can be cached (:class:`MapCache`, keyed by the mask's content): a mask seen
  before (the same image again, or a flip of an augmented whole image) is not transformed twice.
  This is "once per case" wherever the augmentation reproduces a mask exactly, and per patch
  otherwise (random crops), with no assumption about the data pipeline.
* A slice without a boundary (all background, e.g. a missing class, or all foreground) has no
  finite distance: scipy returns garbage and ``edt`` returns inf there. rmseg defines these cases
  explicitly, documented per function; no map ever holds NaN or inf.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

BACKENDS = ("edt", "scipy")
DEFAULT_BACKEND = "edt" if importlib.util.find_spec("edt") is not None else "scipy"

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "MapCache",
    "map_cache",
    "masks_to_host",
    "maps_to_device",
    "foreground_distance_map",
    "two_sided_distance_map",
    "signed_distance_map",
    "normalized_signed_distance_map",
    "rectified_region_map",
]


def _edt_function(backend: str) -> Callable[[np.ndarray], np.ndarray]:
    if backend == "scipy":
        return lambda mask: distance_transform_edt(mask)
    if backend == "edt":
        try:
            import edt
        except ImportError as err:
            raise ImportError(
                "backend='edt' needs the edt package: pip install edt (or use backend='scipy')"
            ) from err
        # edt handles 1 to 3 axes; more (never from rmseg's losses) fall back to scipy
        return lambda mask: (
            edt.edt(np.ascontiguousarray(mask), parallel=1) if mask.ndim <= 3 else distance_transform_edt(mask)
        )
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    """The device-to-host copy: the only one in this module, made once per map computation."""
    return tensor.detach().cpu().numpy()


@torch.no_grad()
def masks_to_host(*masks: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Bool masks of one shape as host bool arrays, in ONE device-to-host copy.

    Up to 8 masks travel as the bits of one uint8 tensor (no more bytes than a single bool mask)
    and are unpacked on the host, so e.g. the Hausdorff loss moves its ground truth and thresholded
    prediction together instead of copying each.
    """
    if not 1 <= len(masks) <= 8:
        raise ValueError(f"masks_to_host takes 1 to 8 masks, got {len(masks)}")
    if any(not isinstance(m, torch.Tensor) or m.dtype != torch.bool for m in masks):
        raise ValueError("masks_to_host takes bool tensors (threshold first, e.g. probs > 0.5)")
    if len({(m.shape, m.device) for m in masks}) != 1:
        raise ValueError(f"masks must share shape and device, got {[(tuple(m.shape), str(m.device)) for m in masks]}")
    if len(masks) == 1:
        return (_to_host(masks[0]),)
    packed = masks[0].to(torch.uint8)
    for bit, mask in enumerate(masks[1:], start=1):
        packed = packed | (mask.to(torch.uint8) << bit)
    host = _to_host(packed)
    return tuple((host & np.uint8(1 << bit)).astype(bool) for bit in range(len(masks)))


@torch.no_grad()
def maps_to_device(maps: Sequence[np.ndarray], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """Host maps of one shape and dtype as tensors on ``device``, in ONE host-to-device copy (stacked)."""
    if len(maps) == 0:
        raise ValueError("maps_to_device needs at least one map")
    return torch.from_numpy(np.stack(maps)).to(device).unbind(0)


def _as_binary_numpy(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    array = _to_host(masks) if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if array.ndim < 3:
        raise ValueError(
            f"masks must be (B, C, *S) with at least one spatial axis, got shape {array.shape}"
        )
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                "masks must be binary (bool or 0/1), got values such as "
                f"{np.unique(array[~np.isin(array, (0, 1))])[:3].tolist()}; one-hot encode labels first"
            )
        array = array.astype(bool)
    return array


def _like_input(maps: np.ndarray, masks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if isinstance(masks, torch.Tensor):
        return torch.from_numpy(maps).to(masks.device)
    return maps


class MapCache:
    """Least-recently-used store of per-slice maps, keyed by map kind, backend, dtype, shape and the
    mask's content (BLAKE2 digest of its packed bits), so a cached map is always the map of that exact mask.

    Memory: ``max_items`` slices, float32 for every map but the float64 one of
    :func:`two_sided_distance_map` (float32: 1 MiB per 512x512 slice, 3.8 MiB per 112x112x80 patch).
    ``hits`` / ``misses`` count look-ups.
    """

    def __init__(self, max_items: int) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items={max_items!r} must be a positive int (slices kept)")
        self.max_items = max_items
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(
        self,
        kind: str,
        backend: str,
        mask: np.ndarray,
        compute: Callable[[], np.ndarray],
        dtype: np.dtype | type = np.float32,
    ) -> np.ndarray:
        """The cached map of ``mask`` (as ``dtype``), or ``compute()`` stored under it."""
        dtype = np.dtype(dtype)
        digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
        key = (kind, backend, dtype.str, mask.shape, digest)
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute().astype(dtype)
        self._items[key] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value


def map_cache(max_items: int) -> MapCache | None:
    """A :class:`MapCache` of ``max_items`` slices, or None for 0 (no caching); the losses' ``cache_size``."""
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
        raise ValueError(f"cache_size={max_items!r} must be an int >= 0 (0: no caching)")
    return MapCache(max_items) if max_items else None


def _per_slice(
    masks: np.ndarray | torch.Tensor,
    backend: str,
    fn: Callable[[np.ndarray, Callable[[np.ndarray], np.ndarray]], np.ndarray],
    cache: MapCache | None,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray | torch.Tensor:
    edt_fn = _edt_function(backend)
    array = _as_binary_numpy(masks)  # a tensor: the one device-to-host copy
    out = np.zeros(array.shape, dtype=dtype)
    for b in range(array.shape[0]):
        for c in range(array.shape[1]):
            mask = array[b, c]
            if cache is None:
                out[b, c] = fn(mask, edt_fn)
            else:
                out[b, c] = cache.get(fn.__qualname__, backend, mask, partial(fn, mask, edt_fn), dtype)
    return _like_input(out, masks)  # a tensor: the one host-to-device copy


def _has_boundary(mask: np.ndarray) -> bool:
    return bool(mask.any()) and not bool(mask.all())


@torch.no_grad()
def foreground_distance_map(
    masks: np.ndarray | torch.Tensor, backend: str = DEFAULT_BACKEND, cache: MapCache | None = None
) -> np.ndarray | torch.Tensor:
    """``d_in``: distance of each foreground voxel to the nearest background voxel, 0 elsewhere.

    The foreground-only map of the Hausdorff-distance loss in Ma et al.'s comparison. A slice
    without a boundary (empty or full) gives 0 everywhere.
    """

    def one(mask: np.ndarray, edt_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return edt_fn(mask) if _has_boundary(mask) else np.zeros(mask.shape)

    return _per_slice(masks, backend, one, cache)


@torch.no_grad()
def two_sided_distance_map(
    masks: np.ndarray | torch.Tensor,
    backend: str = "scipy",
    cache: MapCache | None = None,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray | torch.Tensor:
    """``d_in + d_out``: distance of each voxel to the nearest voxel across the boundary (>= 1).

    The map of the ``inside_outside`` Hausdorff loss: equal to MONAI's
    ``HausdorffDTLoss.distance_field`` (scipy, float64; tested bitwise) computed per ``(b, c)``
    slice from one host copy instead of MONAI's copies per slice and side. Defaults to scipy and
    float64 like MONAI. A slice without a boundary (empty or full) gives 0 everywhere.
    """

    def one(mask: np.ndarray, edt_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if not _has_boundary(mask):
            return np.zeros(mask.shape)
        return edt_fn(mask) + edt_fn(~mask)

    return _per_slice(masks, backend, one, cache, dtype)


@torch.no_grad()
def signed_distance_map(
    masks: np.ndarray | torch.Tensor, backend: str = DEFAULT_BACKEND, cache: MapCache | None = None
) -> np.ndarray | torch.Tensor:
    """Signed distance ``d_out - d_in`` (negative inside), 0 on the inner boundary.

    Inner boundary: foreground voxels with a face-neighbour in the background (``d_in == 1``,
    skimage's ``find_boundaries(mode="inner")``), as ``compute_sdf`` in Ma et al.'s comparison code
    (SegWithDistMap ``train_LA_BD.py``). Range ``[-max d_in, max d_out]``.

    Offset against Kervadec et al.'s code (LIVIAETS/boundary-loss ``one_hot2dist``): it gives
    ``-(d_in - 1)`` inside, rmseg and Ma et al. ``-d_in``. Both are 0 on the inner boundary and
    ``d_out`` outside; deeper inside, Kervadec's map is 1 higher, so their boundary loss equals
    rmseg's plus the mean of ``p`` over the object's interior (inner boundary excluded).

    A slice without a boundary (no foreground, or all foreground) gives 0 everywhere, so the boundary
    loss adds nothing for it, as in Kervadec et al.'s code (which leaves 0 where a class is absent).
    Ma et al.'s code has no such guard: for a patch without foreground its map is scipy's EDT of an
    all-ones array (positive values that measure no distance to any boundary), so there its loss
    penalises every foreground probability, where rmseg's is 0.
    """

    def one(mask: np.ndarray, edt_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if not _has_boundary(mask):
            return np.zeros(mask.shape)
        d_in = edt_fn(mask)
        sdf = edt_fn(~mask) - d_in
        sdf[d_in == 1] = 0.0
        return sdf

    return _per_slice(masks, backend, one, cache)


def _wholly_outside_or_inside(mask: np.ndarray) -> np.ndarray:
    """The map of a slice without boundary: +1 everywhere without foreground, -1 when all foreground."""
    return np.full(mask.shape, -1.0 if mask.any() else 1.0)


@torch.no_grad()
def normalized_signed_distance_map(
    masks: np.ndarray | torch.Tensor, backend: str = DEFAULT_BACKEND, cache: MapCache | None = None
) -> np.ndarray | torch.Tensor:
    """``d_out / max d_out - d_in / max d_in`` in ``[-1, 1]``, 0 on the inner boundary (Xue et al.).

    The regression target of the SDF loss. A slice with no foreground is wholly outside: +1
    everywhere; a slice with no background is wholly inside: -1 everywhere (Ma et al.'s code leaves
    0 there, which ``sigmoid(-k * sdf)`` would read as probability 0.5 everywhere).
    """

    def one(mask: np.ndarray, edt_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if not _has_boundary(mask):
            return _wholly_outside_or_inside(mask)
        d_in = edt_fn(mask)
        d_out = edt_fn(~mask)
        sdf = d_out / d_out.max() - d_in / d_in.max()
        sdf[d_in == 1] = 0.0
        return sdf

    return _per_slice(masks, backend, one, cache)


@torch.no_grad()
def rectified_region_map(
    masks: np.ndarray | torch.Tensor, backend: str = DEFAULT_BACKEND, cache: MapCache | None = None
) -> np.ndarray | torch.Tensor:
    """Rectified region-wise map (Valverde & Tohka 2021): ``-d_in / max d_in`` inside, +1 outside.

    Values in ``[-1, 0)`` inside the class, +1 outside. A class filling the slice has no border
    to measure from: -1 everywhere; an absent class: +1 everywhere.
    """

    def one(mask: np.ndarray, edt_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if not _has_boundary(mask):
            return _wholly_outside_or_inside(mask)
        d_in = edt_fn(mask)
        return np.where(mask, -d_in / d_in.max(), 1.0)

    return _per_slice(masks, backend, one, cache)
