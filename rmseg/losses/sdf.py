"""Signed-distance-function loss (Xue et al., "Shape-aware organ segmentation by predicting signed
distance maps", AAAI 2020), in the form of Ma et al.'s comparison (SegWithDistMap, train_LA_AAAISDF.py)."""

from __future__ import annotations

import torch

from rmseg.losses._map_weighted import DistanceMapLossBase
from rmseg.losses._utils import prepare_probabilities_and_onehot, reduce_batch
from rmseg.losses.distance_maps import normalized_signed_distance_map
from rmseg.models.heads import SDF_K

__all__ = ["SignedDistanceLoss"]


class SignedDistanceLoss(DistanceMapLossBase):
    """The network regresses each foreground class's normalised signed distance map.

    With ``f = tanh(output[:, c])`` for each foreground class ``c >= 1``, ``phi`` the normalised SDF
    of the ground truth (in ``[-1, 1]``, negative inside, see
    :func:`~rmseg.losses.distance_maps.normalized_signed_distance_map`; computed on the CPU without
    gradient, with one device-to-host copy per call) and ``h = sigmoid(-k f)``:

        L_product = (sum f phi + s) / (sum f phi + sum f^2 + sum phi^2 + s)
        L_sdf     = mean |f - phi| - L_product
        L_dice    = 1 - (2 sum h g + s) / (sum h^2 + sum g^2 + s)
        L         = dice_weight * L_dice + sdf_weight * L_sdf

    per sample and class (sums over voxels), averaged over the foreground classes, then reduced
    over the batch. Defaults ``k = 1500``, ``sdf_weight = 10``, ``dice_weight = 1``: Ma et al.'s
    ``loss_seg_dice + 10 * loss_sdf_aaai`` ("lambda = 10 in this paper"); they pool the sums over
    the batch, rmseg keeps samples apart. Range per class: ``L_product`` in ``[-1, 1/3]``, so
    ``L`` in ``[-sdf_weight / 3, dice_weight + 3 sdf_weight]``: the loss can be negative.

    The output keeps the rmseg contract of ``C = num_classes`` channels; channel 0 is unused (no
    gradient reaches it). Use as the only term of ``SegmentationLoss(lambda_ce=0, lambda_dice=0)``;
    inference thresholds ``f`` at 0 through the model's ``sdf`` head
    (:func:`rmseg.models.heads.sdf_probabilities` with this loss's ``k``).

    Args:
        k: steepness of the smooth Heaviside, > 0.
        sdf_weight, dice_weight: weights of ``L_sdf`` and ``L_dice``, >= 0, not both 0.
        smooth: ``s`` > 0.
        to_onehot_y, reduction, backend, cache_size: see
            :class:`~rmseg.losses._map_weighted.DistanceMapLossBase` (the head takes no activation and
            covers the foreground classes only).

    Shapes: output ``(B, C, *S)``, ``C >= 2``, 1 to 3 spatial dims; target ``(B, 1, *S)`` or ``(B, C, *S)``.
    Returns a scalar, or ``(B,)`` with ``reduction="none"``.

    Example::

        >>> sdf = SignedDistanceLoss(k=1500.0, sdf_weight=10.0)
        >>> output = torch.randn(1, 2, 48, 48, 32)
        >>> value = sdf(output, torch.randint(0, 2, (1, 1, 48, 48, 32)))
        >>> from rmseg.models.heads import sdf_probabilities
        >>> probs = sdf_probabilities(output, k=sdf.k)  # inference
    """

    def __init__(self, k: float = SDF_K, sdf_weight: float = 10.0, dice_weight: float = 1.0, smooth: float = 1e-5,
                 **options) -> None:
        super().__init__(include_background=False, activation=None, **options)
        for name, value in (("k", k), ("sdf_weight", sdf_weight), ("dice_weight", dice_weight), ("smooth", smooth)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative number")
        if k == 0 or smooth == 0:
            raise ValueError(f"k={k!r} and smooth={smooth!r} must be > 0")
        if sdf_weight == 0 and dice_weight == 0:
            raise ValueError("sdf_weight = dice_weight = 0: the loss would be empty")
        self.k, self.sdf_weight, self.dice_weight, self.smooth = float(k), float(sdf_weight), float(dice_weight), float(smooth)

    def _check_channels(self, output: torch.Tensor) -> None:
        if output.ndim < 3 or output.shape[1] < 2:
            raise ValueError(
                f"output shape {tuple(output.shape)} must be (B, C, *S) with C >= 2 (background + foreground "
                "classes; channel 0 is unused by the SDF head)"
            )

    def predicted_sdf(self, output: torch.Tensor) -> torch.Tensor:
        """``tanh`` of the foreground channels: the predicted normalised SDF ``(B, C - 1, *S)``."""
        self._check_channels(output)
        return torch.tanh(output[:, 1:])

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_channels(input)
        # Activation only to reuse the shared checks; the SDF head reads the raw output.
        _, onehot = prepare_probabilities_and_onehot(input, target, "sigmoid", self.to_onehot_y, False)
        f = self.predicted_sdf(input)
        # one device-to-host copy of the mask, one host-to-device copy of the map
        phi = normalized_signed_distance_map(onehot > 0.5, self.backend, self.cache).to(f.dtype)
        s = self.smooth
        intersect = (f * phi).flatten(2).sum(2)
        product = (intersect + s) / (intersect + (f**2).flatten(2).sum(2) + (phi**2).flatten(2).sum(2) + s)
        l1 = (f - phi).abs().flatten(2).mean(2)
        h = torch.sigmoid(-self.k * f)
        g = onehot
        dice = 1 - (2 * (h * g).flatten(2).sum(2) + s) / ((h**2).flatten(2).sum(2) + (g**2).flatten(2).sum(2) + s)
        per_class = self.dice_weight * dice + self.sdf_weight * (l1 - product)
        return reduce_batch(per_class.mean(1), self.reduction)
