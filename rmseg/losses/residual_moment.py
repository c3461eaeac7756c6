"""Residual moment (RM) loss of Wang et al., "Residual Moment Loss for Medical Image Segmentation" (2021).

For a prediction ``P`` and ground truth ``G`` of one channel, with centred normalised coordinates
``C_i, C_j[, C_k]`` and an order ``(p, q[, r])``:

    mu_pq(f) = C_i^p * C_j^q * f                       (pixel-wise moment map, Eq. 2)
    L_pq     = sum_x (mu_pq(P)(x) - mu_pq(G)(x))^2     (Eq. 4)
             = sum_x (C_i^p C_j^q)^2 (P - G)(x)^2      (Theorem 1: the (2p, 2q) central moment of the
                                                        squared residual map about the image centre)

so every order is one weighted squared error and a set of orders shares one weight map,
``W = sum_orders prod_axes C^(2 p)``, built once per (shape, dtype, device) and cached. The loss is
``sum_x W(x) sum_c (P_c(x) - G_c(x))^2`` computed with plain tensor operations and differentiated by
autograd (no one-hot tensor: labels are compared with channel indices). Its cost is a small share of a
training step (``benchmarks/rm_loss.py``, ``results/benchmarks/rm_loss.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rmseg.losses._utils import (
    BATCH_REDUCTIONS,
    check_activation,
    check_choice,
    check_input_and_target,
    check_orders,
    first_channel,
    reduce_batch,
)

GRIDS = ("center", "paper")
PIXEL_REDUCTIONS = ("sum", "mean")
COORDINATE_FRAMES = ("patch", "volume")
# Twice the offset of a pixel's coordinate from its 0-based index: (2 i + k - 2 H/2) / (2 H).
_GRID_SHIFT = {"center": 1, "paper": 2}


_ACTIVATIONS = {"softmax": lambda x: torch.softmax(x, dim=1), "sigmoid": torch.sigmoid}


def _residual(probs: torch.Tensor, target: torch.Tensor, first: int, to_onehot_y: bool) -> torch.Tensor:
    """``P - G`` on channels ``first:``, comparing labels with channel indices instead of building one-hot."""
    if to_onehot_y:
        view = (1, -1) + (1,) * (probs.ndim - 2)
        classes = torch.arange(first, probs.shape[1], device=probs.device).view(view)
        return probs[:, first:] - (target == classes).to(probs.dtype)
    return probs[:, first:] - target[:, first:].to(probs.dtype)


class ResidualMomentLoss(nn.Module):
    """Residual moment loss summed over moment orders, 2D ``(B, C, H, W)`` or 3D ``(B, C, H, W, D)``.

    Coordinates along an axis of size ``H`` (index ``i`` along rows, ``j`` columns, ``k`` slices):

    - ``grid="center"`` (default): pixel centres, ``C_i = (i + 0.5 - H/2) / H`` for 0-based ``i``;
      symmetric about the image centre, so even orders are invariant to flips.
    - ``grid="paper"``: the paper's literal ``C_i = (i - H/2) / H`` for 1-based ``i`` (half a pixel off).

    Per sample: ``sum_c reduce_x W(x) (P_c(x) - G_c(x))^2`` over the included channels ``c``, with
    ``reduce_x`` = ``pixel_reduction`` (``"sum"``: Eq. 4 literally; ``"mean"``: divided by the number of
    pixels, which the paper does not use), then ``reduction`` over the batch.

    Args:
        orders: moment orders, e.g. ``[(2, 0), (0, 2), (2, 2)]`` (2D) or ``[(2, 0, 0), ...]`` (3D).
        include_background: include channel 0 (default False; the paper applies RM to the foreground).
        activation: ``"softmax"`` (default), ``"sigmoid"`` or None (input already probabilities).
        to_onehot_y: target is labels ``(B, 1, *S)`` (default) rather than one-hot ``(B, C, *S)``.
        grid: ``"center"`` or ``"paper"``, see above.
        pixel_reduction: ``"sum"`` (default) or ``"mean"`` over pixels.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``) over the batch.
        coordinate_frame: ``"patch"`` (default; coordinates of the input itself) or ``"volume"``
            (coordinates of the full image a random crop was taken from; ``forward`` then needs
            ``offset`` and ``full_shape``). The paper trains on whole images or does not say.
    With ``grid="center"`` and an odd size, the centre row/column has coordinate 0, so orders with a
    positive power on that axis give it zero weight. The gradient is autograd's, to ``input`` (and to a
    floating-point one-hot ``target`` that requires it).

    Shapes: ``input`` ``(B, C, *S)`` logits or probabilities; ``target`` ``(B, 1, *S)`` or ``(B, C, *S)``;
    ``offset`` / ``full_shape`` int tensors ``(B, ndim)`` or ``(ndim,)``. Returns a scalar, or ``(B,)``
    with ``reduction="none"`` (per sample, like the other rmseg losses).

    Example::

        >>> import torch
        >>> from rmseg.losses import ResidualMomentLoss
        >>> loss = ResidualMomentLoss(orders=[(2, 0), (0, 2)], pixel_reduction="mean")
        >>> logits = torch.randn(2, 3, 64, 64, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 64, 64))
        >>> loss(logits, labels).backward()
        >>> ResidualMomentLoss([(2, 0)], reduction="none")(logits, labels).shape
        torch.Size([2])
    """

    def __init__(
        self,
        orders: Sequence[Sequence[int]],
        include_background: bool = False,
        activation: str | None = "softmax",
        to_onehot_y: bool = True,
        grid: str = "center",
        pixel_reduction: str = "sum",
        reduction: str = "mean",
        coordinate_frame: str = "patch",
    ) -> None:
        super().__init__()
        self.orders = check_orders(orders)
        self.spatial_dims = len(self.orders[0])
        self.activation = check_activation(activation)
        check_choice("grid", grid, GRIDS)
        check_choice("pixel_reduction", pixel_reduction, PIXEL_REDUCTIONS)
        check_choice("reduction", reduction, BATCH_REDUCTIONS)
        check_choice("coordinate_frame", coordinate_frame, COORDINATE_FRAMES)
        for name, value in (("include_background", include_background), ("to_onehot_y", to_onehot_y)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be True or False")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.grid = grid
        self.pixel_reduction = pixel_reduction
        self.reduction = reduction
        self.coordinate_frame = coordinate_frame
        self._weight_cache: dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (
            f"orders={list(self.orders)}, include_background={self.include_background}, "
            f"activation={self.activation!r}, grid={self.grid!r}, pixel_reduction={self.pixel_reduction!r}, "
            f"reduction={self.reduction!r}, coordinate_frame={self.coordinate_frame!r}"
        )

    def weight_map(
        self,
        spatial_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        offset: torch.Tensor | None = None,
        full_shape: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused weights ``sum_orders prod_axes C^(2 p)``: ``(*S)`` in the patch frame (cached),
        ``(B, *S)`` for ``offset``/``full_shape`` ``(B, ndim)`` in the volume frame (built each call)."""
        spatial_shape = tuple(int(s) for s in spatial_shape)
        device = torch.device(device)
        if offset is None:
            key = (spatial_shape, dtype, device)
            weights = self._weight_cache.get(key)
            if weights is None:
                zeros = torch.zeros(1, len(spatial_shape), dtype=torch.long, device=device)
                full = torch.tensor([spatial_shape], dtype=torch.long, device=device)
                weights = self._build_weights(spatial_shape, zeros, full, torch.float64).to(dtype)[0]
                self._weight_cache[key] = weights
            return weights
        build_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return self._build_weights(spatial_shape, offset, full_shape, build_dtype).to(dtype)

    def _build_weights(
        self, spatial_shape: tuple[int, ...], offset: torch.Tensor, full_shape: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        batch, ndim = offset.shape
        shift = _GRID_SHIFT[self.grid]
        coords = []
        for axis, size in enumerate(spatial_shape):
            index = torch.arange(size, device=offset.device)
            full = full_shape[:, axis, None]
            numerator = 2 * (offset[:, axis, None] + index) + shift - full
            view = [batch] + [size if a == axis else 1 for a in range(ndim)]
            coords.append((numerator.to(dtype) / (2 * full).to(dtype)).view(view))
        total = torch.zeros((batch, *spatial_shape), dtype=dtype, device=offset.device)
        for order in self.orders:
            term = None
            for axis, power in enumerate(order):
                if power:
                    factor = coords[axis].pow(2 * power)
                    term = factor if term is None else term * factor
            total = total + (1.0 if term is None else term)
        return total

    def _frame(self, name: str, value: object, batch: int, device: torch.device) -> torch.Tensor:
        if value is None:
            raise ValueError(f"coordinate_frame='volume' needs {name} (B, {self.spatial_dims}) int tensor; got None")
        tensor = torch.as_tensor(value, device=device)
        if tensor.is_floating_point() or tensor.dtype == torch.bool:
            raise ValueError(f"{name} must hold integers, got dtype {tensor.dtype}")
        given = tuple(tensor.shape)
        if tensor.ndim == 1:
            tensor = tensor.unsqueeze(0).expand(batch, -1)
        if tensor.shape != (batch, self.spatial_dims):
            raise ValueError(f"{name} shape {given} must be ({batch}, {self.spatial_dims}) or ({self.spatial_dims},)")
        return tensor.long()

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        offset: torch.Tensor | None = None,
        full_shape: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``input`` ``(B, C, *S)`` against ``target``; ``offset``/``full_shape`` are used in the
        volume frame only (ignored in the patch frame, so a training loop may always pass them)."""
        self._check_spatial_dims(input)
        check_input_and_target(input, target, self.activation, self.to_onehot_y)
        return self._loss(input, target, self.activation, self.to_onehot_y, offset, full_shape)

    def from_probabilities(self, probabilities: torch.Tensor, target: torch.Tensor, offset: torch.Tensor | None = None,
                           full_shape: torch.Tensor | None = None, *, check_range: bool = True,
                           one_hot: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``probabilities`` ``(B, C, *S)``: this loss's activation already applied to the logits
        (e.g. the softmax that ``SegmentationLoss`` computes once and shares with CE and Dice).

        Equals ``forward(logits, target)`` for ``probabilities = activation(logits)`` with no activation
        here: the residual on the included channels and one weighted sum, so the gradient reaches the
        logits once, through the caller's activation. Same arguments, checks and result as ``forward``,
        plus, for a caller that built these tensors itself: ``check_range=False`` skips checking that
        probabilities (and a one-hot target) lie in ``[0, 1]`` (a pass over each); ``one_hot`` ``(B, C,
        *S)``, the label ``target`` already turned into one-hot (``SegmentationLoss`` builds it once for
        Dice and RM), is used instead of ``target``, which is then neither read nor checked.
        """
        self._check_spatial_dims(probabilities)
        to_onehot_y = self.to_onehot_y
        if one_hot is not None:
            if not self.to_onehot_y:
                raise ValueError("one_hot is for label targets: this loss has to_onehot_y=False, pass the target only")
            target, to_onehot_y = one_hot, False
        check_input_and_target(probabilities, target, None, to_onehot_y, check_range=check_range)
        return self._loss(probabilities, target, None, to_onehot_y, offset, full_shape)

    def _check_spatial_dims(self, input: torch.Tensor) -> None:
        if input.ndim != 2 + self.spatial_dims:
            raise ValueError(
                f"orders {list(self.orders)} are {self.spatial_dims}D but input shape {tuple(input.shape)} "
                f"has {input.ndim - 2} spatial dims"
            )

    def _loss(self, input: torch.Tensor, target: torch.Tensor, activation: str | None, to_onehot_y: bool,
              offset: torch.Tensor | None, full_shape: torch.Tensor | None) -> torch.Tensor:
        """Per-sample ``reduce_x W(x) sum_c (P_c - G_c)^2`` over the included channels, reduced over the batch."""
        first = first_channel(input.shape[1], self.include_background)
        spatial = tuple(input.shape[2:])
        batch = input.shape[0]
        weight_dtype = torch.promote_types(input.dtype, torch.float32)  # no half-precision weights
        if self.coordinate_frame == "patch":
            weights = self.weight_map(spatial, weight_dtype, input.device).unsqueeze(0)
        else:
            offset = self._frame("offset", offset, batch, input.device)
            full_shape = self._frame("full_shape", full_shape, batch, input.device)
            end = offset + torch.tensor(spatial, device=input.device)
            if bool((offset < 0).any()) or bool((end > full_shape).any()):
                raise ValueError(
                    f"patch of shape {spatial} at offset {offset.tolist()} does not fit in full_shape "
                    f"{full_shape.tolist()}: need 0 <= offset and offset + patch shape <= full_shape"
                )
            weights = self.weight_map(spatial, weight_dtype, input.device, offset, full_shape)
        probs = input if activation is None else _ACTIVATIONS[activation](input)
        residual = _residual(probs, target, first, to_onehot_y)
        per_sample = (residual.square().sum(dim=1) * weights).flatten(1).sum(dim=1)
        if self.pixel_reduction == "mean":
            per_sample = per_sample / weights[0].numel()
        return reduce_batch(per_sample, self.reduction)
