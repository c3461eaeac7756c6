"""Losses of the form ``mean_{c, x} p_c(x) * M_c(x)`` with a map ``M`` fixed by the ground truth."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rmseg.losses._utils import (
    BATCH_REDUCTIONS,
    check_activation,
    check_choice,
    prepare_probabilities_and_onehot,
    reduce_batch,
)
from rmseg.losses.distance_maps import BACKENDS, DEFAULT_BACKEND, map_cache


class DistanceMapLossBase(nn.Module):
    """Options shared by the losses built on distance maps, checked once (keyword arguments of every
    subclass):

    Args:
        include_background: include channel 0 (default: the subclass's ``default_include_background``).
        activation: ``"softmax"`` (default), ``"sigmoid"`` or None (input already probabilities).
        to_onehot_y: target is labels ``(B, 1, *S)`` (default) rather than one-hot ``(B, C, *S)``.
        reduction: over the batch, ``"mean"`` / ``"sum"`` (scalars) or ``"none"`` (``(B,)``, per sample).
        backend: EDT backend, ``"edt"`` or ``"scipy"``.
        cache_size: ground-truth maps kept for reuse (:class:`~rmseg.losses.distance_maps.MapCache`,
            keyed by mask content); 0 (default) computes them at every call.
    """

    default_include_background = False

    def __init__(
        self,
        *,
        include_background: bool | None = None,
        activation: str | None = "softmax",
        to_onehot_y: bool = True,
        reduction: str = "mean",
        backend: str = DEFAULT_BACKEND,
        cache_size: int = 0,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, BATCH_REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.activation = check_activation(activation)
        self.include_background = bool(self.default_include_background if include_background is None else include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.reduction = reduction
        self.backend = backend
        self.cache = map_cache(cache_size)


class MapWeightedLoss(DistanceMapLossBase):
    """Probabilities weighted by a ground-truth map, averaged over voxels and classes per sample.

    Subclasses set ``ground_truth_map(mask, backend, cache) -> map`` (computed on the CPU without
    gradient, see :mod:`rmseg.losses.distance_maps`) and document their own arguments. One transfer
    per step: the thresholded ground truth goes to the host in one device-to-host copy and its map
    comes back in one host-to-device copy.
    """

    ground_truth_map: Callable

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = prepare_probabilities_and_onehot(
            input, target, self.activation, self.to_onehot_y, self.include_background
        )
        # one device-to-host copy of the mask, one host-to-device copy of the map
        weights = type(self).ground_truth_map(onehot > 0.5, self.backend, self.cache).to(probs.dtype)
        per_sample = (probs * weights).flatten(1).mean(1)
        return reduce_batch(per_sample, self.reduction)
