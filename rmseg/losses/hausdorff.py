"""Hausdorff-distance loss (Karimi & Salcudean, "Reducing the Hausdorff distance in medical image
segmentation with convolutional neural networks", IEEE TMI 2019), distance-transform form."""

from __future__ import annotations

import numpy as np
import torch

from rmseg.losses._map_weighted import DistanceMapLossBase
from rmseg.losses._utils import check_choice, prepare_probabilities_and_onehot, reduce_batch
from rmseg.losses.distance_maps import (
    foreground_distance_map,
    maps_to_device,
    masks_to_host,
    two_sided_distance_map,
)

__all__ = ["HausdorffDistanceLoss"]

VARIANTS = ("foreground", "inside_outside")


class HausdorffDistanceLoss(DistanceMapLossBase):
    """``L = mean_{c, x} (p_c - g_c)^2 * (d_pred,c^a + d_gt,c^a)`` with ``a = distance_exponent`` (2 by default).

    ``d_gt`` is a distance map of the ground truth, ``d_pred`` of the thresholded prediction
    ``p_c > 0.5``, both exact EDTs computed on the CPU without gradient (constants for autograd).
    One transfer per step: both masks go to the host in one device-to-host copy and both maps come
    back in one host-to-device copy (:func:`~rmseg.losses.distance_maps.masks_to_host`).

    Variants:
        ``"foreground"``: ``d`` = distance of each foreground voxel to the background, 0 outside
            (:func:`~rmseg.losses.distance_maps.foreground_distance_map`), as in Ma et al.'s
            comparison (``train_LA_HD.py``), the setting of the paper's Table 2.
        ``"inside_outside"``: ``d`` = distance to the boundary on both sides, as Karimi &
            Salcudean (:func:`~rmseg.losses.distance_maps.two_sided_distance_map`): the value of
            MONAI's ``HausdorffDTLoss`` (same scipy float64 maps and casts, tested), without its
            device-to-host copies per sample, class and side.

    Averaged over voxels and the included classes per sample, then reduced over the batch. A slice
    with no boundary (empty or full mask) has ``d = 0``. Non-negative; 0 iff ``p = g`` or both maps
    vanish. Use with CE + Dice and ``RebalanceSchedule(step=0.001, floor=0.001)``.

    Args:
        variant: ``"foreground"`` (default) or ``"inside_outside"``.
        distance_exponent: exponent ``a`` of the distances, > 0 (Karimi & Salcudean's alpha).
        include_background: include channel 0 (default False).
        backend: EDT backend of the foreground variant (``inside_outside`` always uses scipy in float64,
            as MONAI does).
        activation, to_onehot_y, reduction, cache_size: see
            :class:`~rmseg.losses._map_weighted.DistanceMapLossBase`.

    Shapes: input ``(B, C, *S)`` with 1 to 3 spatial dims (``inside_outside``: 2 or 3), target
    ``(B, 1, *S)`` or ``(B, C, *S)``. Returns a scalar, or ``(B,)`` with ``reduction="none"``.

    Example::

        >>> hd = HausdorffDistanceLoss(variant="inside_outside", distance_exponent=2.0)
        >>> value = hd(torch.randn(4, 3, 64, 64, requires_grad=True), torch.randint(0, 3, (4, 1, 64, 64)))
    """

    def __init__(self, variant: str = "foreground", distance_exponent: float = 2.0, **options) -> None:
        check_choice("variant", variant, VARIANTS)
        super().__init__(**options)
        if isinstance(distance_exponent, bool) or not isinstance(distance_exponent, (int, float)) or not distance_exponent > 0:
            raise ValueError(f"distance_exponent={distance_exponent!r} must be a positive number (Karimi & Salcudean use 2)")
        self.variant = variant
        self.distance_exponent = float(distance_exponent)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = prepare_probabilities_and_onehot(
            input, target, self.activation, self.to_onehot_y, self.include_background
        )
        if self.variant == "inside_outside":
            if probs.ndim not in (4, 5):
                raise ValueError(
                    f"variant='inside_outside' (as MONAI's HausdorffDTLoss) needs 2D or 3D input, got shape "
                    f"{tuple(input.shape)}; use variant='foreground'"
                )
        # the step's one device-to-host copy: both masks together
        gt, pred = masks_to_host(onehot.detach() > 0.5, probs.detach() > 0.5)
        if self.variant == "inside_outside":
            d_gt = two_sided_distance_map(gt, "scipy", self.cache)
            d_pred = two_sided_distance_map(pred, "scipy")
            # MONAI's casts, on the host: float64 maps -> dtype of the input -> float32
            maps = torch.from_numpy(np.stack((d_pred, d_gt))).to(probs.dtype).float()
            d_pred, d_gt = maps.to(probs.device).unbind(0)  # the one host-to-device copy
            weight = d_pred**self.distance_exponent + d_gt**self.distance_exponent
            # per class mean over voxels, then over classes, in MONAI's order
            per_sample = ((probs - onehot) ** 2 * weight).mean(dim=tuple(range(2, probs.ndim))).mean(1)
        else:
            d_gt = foreground_distance_map(gt, self.backend, self.cache)
            d_pred = foreground_distance_map(pred, self.backend)
            d_gt, d_pred = (d.to(probs.dtype) for d in maps_to_device((d_gt, d_pred), probs.device))
            weight = d_gt**self.distance_exponent + d_pred**self.distance_exponent
            per_sample = ((probs - onehot) ** 2 * weight).flatten(1).mean(1)
        return reduce_batch(per_sample, self.reduction)
