"""Boundary loss (Kervadec et al., "Boundary loss for highly unbalanced segmentation", MedIA 2021)."""

from __future__ import annotations

from rmseg.losses._map_weighted import MapWeightedLoss
from rmseg.losses.distance_maps import signed_distance_map

__all__ = ["BoundaryLoss"]


class BoundaryLoss(MapWeightedLoss):
    """``L = mean_{c, x} p_c(x) * phi_c(x)``, ``phi_c`` the signed distance map of class ``c``.

    ``phi_c`` (negative inside, 0 on the inner boundary, exact EDT; see
    :func:`rmseg.losses.distance_maps.signed_distance_map`) is computed from the ground truth on
    the CPU without gradient, with one device-to-host copy per call. Averaged over voxels and the
    included classes per sample, then reduced over the batch. Binary case: Ma et al.'s comparison
    code (``train_LA_BD.py``) on every patch that holds foreground; two differences from the
    references are documented in :func:`~rmseg.losses.distance_maps.signed_distance_map` (Ma et
    al.'s map of a patch without foreground, and Kervadec et al.'s ``-(d_in - 1)`` inside).

    Range: the loss is NOT non-negative. Per sample, ``mean(min(phi, 0)) <= L <= mean(max(phi, 0))``
    (means over the included classes and voxels), the lower bound (< 0 when a class is present)
    reached by the perfect prediction ``p = g`` and the upper one by ``p = 1 - g``; a class absent
    from the patch (or filling it) has ``phi = 0`` and contributes 0 (rmseg's choice, as Kervadec et
    al.'s code; Ma et al.'s code has no such case).
    Use with CE + Dice and :class:`~rmseg.losses.schedules.RebalanceSchedule`.

    Args:
        include_background: include channel 0 (default False, as Kervadec et al.).
        activation, to_onehot_y, reduction, backend, cache_size: see
            :class:`~rmseg.losses._map_weighted.DistanceMapLossBase`.

    Shapes: input ``(B, C, *S)`` with 1 to 3 spatial dims, target ``(B, 1, *S)`` or ``(B, C, *S)``.
    Returns a scalar, or ``(B,)`` with ``reduction="none"``.

    Example::

        >>> loss = BoundaryLoss()
        >>> loss(torch.randn(2, 2, 32, 32), torch.randint(0, 2, (2, 1, 32, 32))).shape
        torch.Size([])
    """

    ground_truth_map = staticmethod(signed_distance_map)
