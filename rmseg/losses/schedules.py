"""Epoch-wise re-weighting of a compound loss: ``(w_base, w_aux) = schedule(epoch)``."""

from __future__ import annotations

__all__ = ["RebalanceSchedule"]


class RebalanceSchedule:
    """``w(epoch) = max(start - step * epoch, floor)``; ``schedule(epoch) = (w, 1 - w)``.

    The re-weighting of Kervadec et al.'s boundary loss as run in Ma et al.'s comparison
    (SegWithDistMap, ``train_LA_BD.py`` / ``train_LA_HD.py``): ``loss = w * (CE + Dice) +
    (1 - w) * rival`` with the base weight ``w`` starting at 1 and falling by 0.01 (boundary) or 0.001
    (Hausdorff) after every epoch, clamped at 0.01 / 0.001. Used as ``SegmentationLoss(schedule=...,
    alpha=1)``, so the rival term's weight is exactly ``1 - w`` (``alpha``, the weight of the terms,
    stays 1).

    Epoch: one pass of the training data loader, as in Ma et al. (``len(trainloader)``
    iterations: 16 LA training volumes at batch 4 give 4 iterations per epoch, so the boundary
    weight reaches its floor after 99 epochs = 396 iterations and the Hausdorff weight after 999
    epochs = 3996 iterations). rmseg's trainer calls ``set_epoch`` with the same count.

    Args:
        start: base weight ``w`` at epoch 0, in ``[0, 1]``.
        step: decrease per epoch, >= 0.
        floor: lower bound of ``w``, in ``[0, start]``.
    """

    def __init__(self, start: float = 1.0, step: float = 0.01, floor: float = 0.01) -> None:
        for name, value in (("start", start), ("step", step), ("floor", floor)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}={value!r} must be a number")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"start={start!r} must lie in [0, 1]")
        if step < 0:
            raise ValueError(f"step={step!r} must be >= 0")
        if not 0.0 <= floor <= start:
            raise ValueError(f"floor={floor!r} must lie in [0, start={start!r}]")
        self.start = float(start)
        self.step = float(step)
        self.floor = float(floor)

    def base_weight(self, epoch: int) -> float:
        """Weight of CE + Dice at ``epoch`` (>= 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative int")
        return max(self.start - self.step * epoch, self.floor)

    def __call__(self, epoch: int) -> tuple[float, float]:
        w = self.base_weight(epoch)
        return w, 1.0 - w

    def __repr__(self) -> str:
        return f"RebalanceSchedule(start={self.start}, step={self.step}, floor={self.floor})"
