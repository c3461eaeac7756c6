"""Integer-factor resampling between a dataset's grid and a coarser network grid (``data.downsample``).

A reduced-resolution protocol trains and predicts on a grid ``f`` times coarser per axis and scores
on the original grid, so distances stay in the dataset's own pixel/voxel units:

- images: block means over ``f``-sized blocks (each axis edge-padded at its end to a multiple of ``f``);
- labels: the class holding most voxels of each block, ties going to the higher class index (the
  structure inside: 2 of 4 pixels of cup in a block make it cup);
- probabilities back: linear interpolation by exactly ``f`` (block centres lie where the coarse
  samples are), cropped to the original shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def factors_of(downsample: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``downsample`` as a tuple of ``ndim`` positive ints (None: all ones)."""
    if downsample is None:
        return (1,) * ndim
    out = tuple(int(f) for f in downsample)
    if len(out) != ndim or any(f < 1 or f != g for f, g in zip(out, downsample)):
        raise ValueError(f"data.downsample={list(downsample)} must be {ndim} positive integers (1 = keep the axis)")
    return out


def coarse_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    """Shape of the coarse grid: ``ceil(shape / factors)`` per axis."""
    return tuple(-(-int(s) // f) for s, f in zip(shape, factors))


def _blocks(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """``(C, *S)`` edge-padded to multiples of ``factors`` and reshaped to ``(C, s0, f0, s1, f1, ...)``."""
    spatial = array.shape[1:]
    pad = [(0, 0)] + [(0, (-s) % f) for s, f in zip(spatial, factors)]
    padded = np.pad(array, pad, mode="edge") if any(p for _, p in pad) else array
    shape = [array.shape[0]]
    for s, f in zip(coarse_shape(spatial, factors), factors):
        shape += [s, f]
    return padded.reshape(shape)


def downsample_image(image: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Block means of a channel-first image ``(C, *S)`` -> ``(C, *ceil(S / f))`` float32."""
    if all(f == 1 for f in factors):
        return image
    blocks = _blocks(np.asarray(image, dtype=np.float32), factors)
    return blocks.mean(axis=tuple(range(2, blocks.ndim, 2)), dtype=np.float64).astype(np.float32)


def downsample_labels(label: np.ndarray, factors: Sequence[int], num_classes: int) -> np.ndarray:
    """Majority class per block of a channel-first label map ``(1, *S)`` (ties: the higher class)."""
    if all(f == 1 for f in factors):
        return label
    blocks = _blocks(np.asarray(label), factors)
    axes = tuple(range(2, blocks.ndim, 2))
    counts = np.stack([(blocks == c).sum(axis=axes) for c in range(num_classes)])  # (K, 1, *s)
    winner = num_classes - 1 - np.argmax(counts[::-1], axis=0)  # argmax takes the first maximum
    return winner.astype(label.dtype)


def upsample_probabilities(probs: torch.Tensor, factors: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Class probabilities ``(C, *s)`` on the coarse grid -> ``(C, *shape)`` on the original grid."""
    factors, shape = tuple(factors), tuple(int(s) for s in shape)
    if all(f == 1 for f in factors):
        return probs
    if tuple(probs.shape[1:]) != coarse_shape(shape, factors):
        raise ValueError(
            f"probabilities of shape {tuple(probs.shape[1:])} are not the {list(factors)}-fold coarse grid of "
            f"{list(shape)} (expected {list(coarse_shape(shape, factors))})"
        )
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    up = F.interpolate(probs[None].float(), scale_factor=factors, mode=mode, align_corners=False,
                       recompute_scale_factor=False)[0]
    return up[(slice(None), *(slice(0, s) for s in shape))]
