"""Adaptive region-specific loss (Chen et al., "Adaptive region-specific loss for improved medical image
segmentation", IEEE TPAMI 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rmseg.losses._utils import check_activation, check_choice, prepare_probabilities_and_onehot, reduce_batch

__all__ = ["AdaptiveRegionLoss"]

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class AdaptiveRegionLoss(nn.Module):
    """``L = mean_{c, r} (1 - T_{c,r})``, a Tversky index per class ``c`` and sub-region ``r``:

        T = (TP + s) / (TP + alpha_r FP + beta_r FN + s)
        alpha_r = A + B (FP + s) / (FP + FN + s),   beta_r = A + B (FN + s) / (FP + FN + s)

    with soft counts ``TP = sum p g``, ``FP = sum p (1 - g)``, ``FN = sum (1 - p) g`` over the
    region. The image is split into ``num_regions`` regions per axis by adaptive average pooling
    (so sizes need not divide; the counts are region means, which leaves the ratios unchanged
    except for ``s``). The smoothing ``s`` keeps regions with no error (``FP = FN = 0``: alpha = beta
    = A + B/2) and empty regions (``T = 1``) finite. ``alpha_r`` and ``beta_r`` are not detached, as in
    the paper. Range ``[0, 1)``; 0 iff the prediction is exact in every region. Averaged over regions
    and the included classes per sample, then reduced over the batch. Chen et al. sum over the
    sub-regions: their loss is this one times the number of regions, ``prod(num_regions)`` (64 for
    the default 8 x 8 in 2D, 512 for 8 x 8 x 8 in 3D), which scales its gradient, and so its weight
    against CE or Dice, by that factor.

    Args:
        num_regions: regions per spatial axis, an int (every axis) or one int per axis (default 8).
        A, B: the paper's constants (0.3, 0.4), ``A >= 0``, ``B >= 0``, ``A + B > 0``.
        smooth: ``s`` > 0.
        include_background: include channel 0 (default True, as Chen et al.).
        activation: ``"softmax"`` (default), ``"sigmoid"`` or None (input already probabilities).
        to_onehot_y: target is labels ``(B, 1, *S)`` (default) rather than one-hot ``(B, C, *S)``.
        reduction: over the batch, ``"mean"`` / ``"sum"`` / ``"none"`` (``(B,)``).

    Shapes: input ``(B, C, *S)`` with 1 to 3 spatial dims, each at least ``num_regions`` long;
    target ``(B, 1, *S)`` or ``(B, C, *S)``.
    """

    def __init__(
        self,
        num_regions: int | Sequence[int] = 8,
        A: float = 0.3,
        B: float = 0.4,
        smooth: float = 1e-5,
        include_background: bool = True,
        activation: str | None = "softmax",
        to_onehot_y: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        counts = [num_regions] if isinstance(num_regions, int) else list(num_regions)
        if not 1 <= len(counts) <= 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise ValueError(
                f"num_regions={num_regions!r} must be a positive int or 1 to 3 positive ints (one per axis)"
            )
        for name, value in (("A", A), ("B", B), ("smooth", smooth)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative number")
        if A + B <= 0:
            raise ValueError(f"A={A!r} and B={B!r} are both 0: the Tversky weights would vanish")
        if smooth <= 0:
            raise ValueError(f"smooth={smooth!r} must be > 0 to keep empty regions finite")
        check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.num_regions = num_regions if isinstance(num_regions, int) else tuple(counts)
        self.A, self.B, self.smooth = float(A), float(B), float(smooth)
        self.activation = check_activation(activation)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.reduction = reduction

    def _region_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        regions = (
            (self.num_regions,) * len(spatial) if isinstance(self.num_regions, int) else self.num_regions
        )
        if len(regions) != len(spatial) or any(r > s for r, s in zip(regions, spatial)):
            raise ValueError(
                f"num_regions={self.num_regions!r} does not fit the spatial shape {tuple(spatial)}: "
                "give one count per axis, each at most the axis length"
            )
        return tuple(regions)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = prepare_probabilities_and_onehot(
            input, target, self.activation, self.to_onehot_y, self.include_background
        )
        regions = self._region_shape(probs.shape[2:])
        pool = _POOLS[len(regions)]
        tp = pool(probs * onehot, regions)
        fp = pool(probs * (1 - onehot), regions)
        fn = pool((1 - probs) * onehot, regions)
        s = self.smooth
        alpha = self.A + self.B * (fp + s) / (fp + fn + s)
        beta = self.A + self.B * (fn + s) / (fp + fn + s)
        tversky = (tp + s) / (tp + alpha * fp + beta * fn + s)
        per_sample = (1 - tversky).flatten(1).mean(1)
        return reduce_batch(per_sample, self.reduction)
