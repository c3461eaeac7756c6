"""Region-wise loss with rectified region-wise maps (Valverde & Tohka, "Region-wise loss for biomedical
image segmentation", Pattern Recognition 2023 / arXiv 2108.01405, 2021)."""

from __future__ import annotations

from rmseg.losses._map_weighted import MapWeightedLoss
from rmseg.losses.distance_maps import rectified_region_map

__all__ = ["RegionWiseLoss"]


class RegionWiseLoss(MapWeightedLoss):
    """``L = mean_{c, x} p_c(x) * RRW_c(x)``, rectified region-wise maps from the ground truth.

    ``RRW_c(x) = -d_c(x) / max d_c`` inside class ``c`` (``d_c``: distance to the class border,
    exact EDT) and ``+1`` outside (:func:`~rmseg.losses.distance_maps.rectified_region_map`),
    computed on the CPU without gradient, with one device-to-host copy per call.
    Predicting a class outside it costs +1 per voxel; inside it, the deeper the voxel the larger
    the reward. Averaged over voxels and classes per sample, as the authors' released code does
    (jmlipman/RegionWiseLoss ``rwexp_loss.py``: ``torch.mean(softmax * rrwmap)`` over batch, classes
    and voxels), then reduced over the batch. Range ``[-1, 1]``; the per-sample minimum,
    ``mean(RRW * g)``, is reached by the perfect prediction. Usable alone, or as a term of
    :class:`~rmseg.losses.compound.SegmentationLoss` with CE and/or Dice.

    Args:
        include_background: include channel 0 (default True: the maps cover every class of the
            softmax, as in the paper).
        activation, to_onehot_y, reduction, backend, cache_size: see
            :class:`~rmseg.losses._map_weighted.DistanceMapLossBase`.

    Shapes: input ``(B, C, *S)`` with 1 to 3 spatial dims, target ``(B, 1, *S)`` or ``(B, C, *S)``.
    Returns a scalar, or ``(B,)`` with ``reduction="none"``.

    Example::

        >>> RegionWiseLoss(reduction="none")(torch.randn(2, 3, 16, 16, 8), torch.randint(0, 3, (2, 1, 16, 16, 8))).shape
        torch.Size([2])
    """

    ground_truth_map = staticmethod(rectified_region_map)
    default_include_background = True
