"""Epoch-wise re-weighting of a compound loss: ``(w_base, w_aux) = schedule(epoch)``."""

from __future__ import annotations

__all__ = ["RebalanceSchedule"]


class RebalanceSchedule:
    """``alpha(epoch) = max(start - step * epoch, floor)``; ``schedule(epoch) = (alpha, 1 - alpha)``.

    The re-weighting of Kervadec et al.'s boundary loss as run in Ma et al.'s comparison
    (SegWithDistMap, ``train_LA_BD.py`` / ``train_LA_HD.py``): ``loss = alpha * (CE + Dice) +
    (1 - alpha) * rival`` with alpha starting at 1 and falling by 0.01 (boundary) or 0.001
    (Hausdorff) after every epoch, clamped at 0.01 / 0.001. Used as ``SegmentationLoss(schedule=...,
    alpha=1)``, so the rival term's weight is exactly ``1 - alpha``.

    Epoch: one pass of the training data loader, as in Ma et al. (``len(trainloader)``
    iterations: 16 LA training volumes at batch 4 give 4 iterations per epoch, so the boundary
    weight reaches its floor after 99 epochs = 396 iterations and the Hausdorff weight after 999
    epochs = 3996 iterations). rmseg's trainer calls ``set_epoch`` with the same count.

    Args:
        start: alpha at epoch 0, in ``[0, 1]``.
        step: decrease per epoch, >= 0.
        floor: lower bound of alpha, in ``[0, start]``.
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

    def alpha(self, epoch: int) -> float:
        """Weight of CE + Dice at ``epoch`` (>= 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative int")
        return max(self.start - self.step * epoch, self.floor)

    def __call__(self, epoch: int) -> tuple[float, float]:
        a = self.alpha(epoch)
        return a, 1.0 - a

    def __repr__(self) -> str:
        return f"RebalanceSchedule(start={self.start}, step={self.step}, floor={self.floor})"
