"""Boundary loss (Kervadec et al., "Boundary loss for highly unbalanced segmentation", MedIA 2021)."""

from __future__ import annotations

import torch
from torch import nn

from rmseg.losses._utils import check_activation, check_choice, prepare_probabilities_and_onehot, reduce_batch
from rmseg.losses.distance_maps import BACKENDS, DEFAULT_BACKEND, map_cache, signed_distance_map

__all__ = ["BoundaryLoss"]


class BoundaryLoss(nn.Module):
    """``L = mean_{c, x} p_c(x) * phi_c(x)``, ``phi_c`` the signed distance map of class ``c``.

    ``phi_c`` (negative inside, 0 on the inner boundary, exact EDT; see
    :func:`rmseg.losses.distance_maps.signed_distance_map`) is computed from the ground truth on
    the CPU without gradient. Averaged over voxels and the included classes per sample, then
    reduced over the batch. Binary case = Ma et al.'s comparison code (``train_LA_BD.py``).

    Range: the loss is NOT non-negative. Per sample, ``mean(min(phi, 0)) <= L <= mean(max(phi, 0))``
    (means over the included classes and voxels), the lower bound (< 0 when a class is present)
    reached by the perfect prediction ``p = g`` and the upper one by ``p = 1 - g``; a class absent
    from the patch (or filling it) has ``phi = 0`` and contributes 0.
    Use with CE + Dice and :class:`~rmseg.losses.schedules.RebalanceSchedule`.

    Args:
        include_background: include channel 0 (default False, as Kervadec et al.).
        activation: ``"softmax"`` (default), ``"sigmoid"`` or None (input already probabilities).
        to_onehot_y: target is labels ``(B, 1, *S)`` (default) rather than one-hot ``(B, C, *S)``.
        reduction: over the batch, ``"mean"`` / ``"sum"`` / ``"none"`` (``(B,)``).
        backend: EDT backend, ``"edt"`` or ``"scipy"``.
        cache_size: ground-truth maps kept for reuse (:class:`~rmseg.losses.distance_maps.MapCache`,
            keyed by mask content); 0 (default) computes them at every call.

    Shapes: input ``(B, C, *S)`` with 1 to 3 spatial dims, target ``(B, 1, *S)`` or ``(B, C, *S)``.
    """

    def __init__(
        self,
        include_background: bool = False,
        activation: str | None = "softmax",
        to_onehot_y: bool = True,
        reduction: str = "mean",
        backend: str = DEFAULT_BACKEND,
        cache_size: int = 0,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, ("mean", "sum", "none"))
        check_choice("backend", backend, BACKENDS)
        self.activation = check_activation(activation)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.reduction = reduction
        self.backend = backend
        self.cache = map_cache(cache_size)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = prepare_probabilities_and_onehot(
            input, target, self.activation, self.to_onehot_y, self.include_background
        )
        phi = signed_distance_map(onehot > 0.5, self.backend, self.cache).to(probs.dtype)
        per_sample = (probs * phi).flatten(1).mean(1)
        return reduce_batch(per_sample, self.reduction)
