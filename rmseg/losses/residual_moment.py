"""Residual moment (RM) loss of Wang et al., "Residual Moment Loss for Medical Image Segmentation" (2021).

For a prediction ``P`` and ground truth ``G`` of one channel, with centred normalised coordinates
``C_i, C_j[, C_k]`` and an order ``(p, q[, r])``:

    mu_pq(f) = C_i^p * C_j^q * f                       (pixel-wise moment map, Eq. 2)
    L_pq     = sum_x (mu_pq(P)(x) - mu_pq(G)(x))^2     (Eq. 4)
             = sum_x (C_i^p C_j^q)^2 (P - G)(x)^2      (Theorem 1: the (2p, 2q) central moment of the
                                                        squared residual map about the image centre)

so every order is one weighted squared error and a set of orders shares one weight map,
``W = sum_orders prod_axes C^(2 p)``, built once per (shape, dtype, device) and cached.

By default autograd differentiates :func:`_rm_forward` (no one-hot tensor: labels are compared with
channel indices). With ``compile=True`` forward and backward are each one kernel fused by
``torch.compile``, the backward being the analytic gradient :func:`_rm_backward` that recomputes the
activation instead of storing it (measured costs: ``benchmarks/rm_loss.py``).
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


def _activate(input: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation == "softmax":
        return torch.softmax(input, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(input)
    return input


def _residual(probs: torch.Tensor, target: torch.Tensor, first: int, to_onehot_y: bool) -> torch.Tensor:
    """``P - G`` on channels ``first:``, comparing labels with channel indices instead of building one-hot."""
    if to_onehot_y:
        view = (1, -1) + (1,) * (probs.ndim - 2)
        classes = torch.arange(first, probs.shape[1], device=probs.device).view(view)
        return probs[:, first:] - (target == classes).to(probs.dtype)
    return probs[:, first:] - target[:, first:].to(probs.dtype)


def _rm_forward(
    input: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, activation: str | None, first: int, to_onehot_y: bool
) -> torch.Tensor:
    """Per-sample ``sum_x W(x) sum_c (P_c - G_c)^2``; ``weights`` ``(1 or B, *S)``; returns ``(B,)``."""
    residual = _residual(_activate(input, activation), target, first, to_onehot_y)
    return (residual.square().sum(dim=1) * weights).flatten(1).sum(dim=1)


def _rm_backward(
    input: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    grad: torch.Tensor,
    activation: str | None,
    first: int,
    to_onehot_y: bool,
) -> torch.Tensor:
    """Gradient of ``grad . _rm_forward`` wrt ``input``: ``dL/dP_c = 2 W (P_c - G_c)`` on included channels,
    then through the activation (softmax: ``P * (dP - sum_c P_c dP_c)``; sigmoid: ``dP * P * (1 - P)``)."""
    probs = _activate(input, activation)
    residual = _residual(probs, target, first, to_onehot_y)
    scale = weights * grad.view((-1,) + (1,) * (weights.ndim - 1))
    grad_probs = 2 * residual * scale.unsqueeze(1)
    if first:
        grad_probs = torch.cat([torch.zeros_like(probs[:, :first]), grad_probs], dim=1)
    if activation == "softmax":
        return probs * (grad_probs - (probs * grad_probs).sum(dim=1, keepdim=True))
    if activation == "sigmoid":
        return grad_probs * probs * (1 - probs)
    return grad_probs


_COMPILED: dict[str, object] = {}


def _compiled_kernels():
    """``torch.compile`` versions of :func:`_rm_forward` / :func:`_rm_backward` (compiled once, lazily)."""
    if not _COMPILED:
        _COMPILED["forward"] = torch.compile(_rm_forward, dynamic=False)
        _COMPILED["backward"] = torch.compile(_rm_backward, dynamic=False)
    return _COMPILED["forward"], _COMPILED["backward"]


class _CompiledResidualMoment(torch.autograd.Function):
    """Per-sample RM loss through the compiled kernels, with the analytic gradient wrt ``input`` (none
    to target or weights). Saves only the inputs: the backward kernel recomputes the activation, so
    each direction is one fused pass (``torch.compile`` of the plain ops with autograd is slower: it
    stores and re-reads the intermediates)."""

    @staticmethod
    def forward(ctx, input, target, weights, activation, first, to_onehot_y):
        ctx.save_for_backward(input, target, weights)
        ctx.options = (activation, first, to_onehot_y)
        return _compiled_kernels()[0](input, target, weights, activation, first, to_onehot_y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        input, target, weights = ctx.saved_tensors
        grad_input = _compiled_kernels()[1](input, target, weights, grad, *ctx.options)
        return grad_input.to(input.dtype), None, None, None, None, None


class _ResidualMomentOfProbabilities(torch.autograd.Function):
    """Per-sample ``sum_x W(x) sum_c (P_c - G_c)^2`` of given probabilities with the analytic gradient
    ``dL/dP_c = 2 W (P_c - G_c)`` (0 on excluded channels; none to target or weights).

    Plain PyTorch, written out because it is faster than autograd of :func:`_rm_forward`: the forward
    keeps only ``W (P - G)``, so the backward is one multiplication into the gradient tensor instead of
    the square, sum, slice and broadcast backwards (measured: ``benchmarks/rm_loss.py``).
    """

    @staticmethod
    def forward(ctx, probs, target, weights, first, to_onehot_y):
        residual = _residual(probs, target, first, to_onehot_y)
        weighted = residual * weights.unsqueeze(1)
        ctx.save_for_backward(weighted)
        ctx.shape = (probs.shape, probs.dtype, first)
        # Multiply-then-sum (pairwise summation) rather than a batched matmul: bmm's float32 dot drifts by
        # ~1e-4 relative on a 512x512 image. In place into the residual (a temporary) where the dtypes agree:
        # one allocation less (half-precision probabilities keep the float32 product).
        product = residual.mul_(weighted) if residual.dtype == weighted.dtype else weighted * residual
        return product.flatten(1).sum(dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weighted,) = ctx.saved_tensors
        shape, dtype, first = ctx.shape
        grad_probs = weighted.new_empty(shape, dtype=dtype)
        grad_probs[:, :first] = 0
        scale = (2 * grad).view((-1,) + (1,) * (len(shape) - 1))
        torch.mul(weighted, scale, out=grad_probs[:, first:])
        return grad_probs, None, None, None, None


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
        compile: fuse the loss and gradient kernels with ``torch.compile`` (default False: plain
            PyTorch). Needs a working compile backend (a C++ compiler on CPU, Triton on GPU); the
            first call per shape compiles (seconds).

    With ``grid="center"`` and an odd size, the centre row/column has coordinate 0, so orders with a
    positive power on that axis give it zero weight. With ``compile=True`` no gradient flows to
    ``target`` and the analytic gradient wrt ``input`` is once-differentiable.

    Shapes: ``input`` ``(B, C, *S)`` logits or probabilities; ``target`` ``(B, 1, *S)`` or ``(B, C, *S)``;
    ``offset`` / ``full_shape`` int tensors ``(B, ndim)`` or ``(ndim,)``. Returns a scalar or ``(B,)``.
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
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.orders = check_orders(orders)
        self.spatial_dims = len(self.orders[0])
        self.activation = check_activation(activation)
        check_choice("grid", grid, GRIDS)
        check_choice("pixel_reduction", pixel_reduction, PIXEL_REDUCTIONS)
        check_choice("reduction", reduction, BATCH_REDUCTIONS)
        check_choice("coordinate_frame", coordinate_frame, COORDINATE_FRAMES)
        flags = (("include_background", include_background), ("to_onehot_y", to_onehot_y), ("compile", compile))
        for name, value in flags:
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be True or False")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.grid = grid
        self.pixel_reduction = pixel_reduction
        self.reduction = reduction
        self.coordinate_frame = coordinate_frame
        self.compile = compile
        self._weight_cache: dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (
            f"orders={list(self.orders)}, include_background={self.include_background}, "
            f"activation={self.activation!r}, grid={self.grid!r}, pixel_reduction={self.pixel_reduction!r}, "
            f"reduction={self.reduction!r}, coordinate_frame={self.coordinate_frame!r}, compile={self.compile}"
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
        return self._loss(input, target, self.activation, offset, full_shape)

    def from_probabilities(
        self,
        probabilities: torch.Tensor,
        target: torch.Tensor,
        offset: torch.Tensor | None = None,
        full_shape: torch.Tensor | None = None,
        *,
        check_range: bool = True,
        one_hot: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``probabilities`` ``(B, C, *S)``: this loss's activation already applied to the logits
        (e.g. the softmax that ``SegmentationLoss`` computes once and shares with CE and Dice).

        Equals ``forward(logits, target)`` for ``probabilities = activation(logits)`` with no activation
        here: the residual on the included channels and one weighted sum, so the gradient reaches the
        logits once, through the caller's activation. Same arguments, checks and result as ``forward``,
        plus, for a caller that built these tensors itself: ``check_range=False`` skips checking that
        probabilities (and a one-hot target) lie in ``[0, 1]`` (a pass over each); ``one_hot`` ``(B, C,
        *S)``, the label ``target`` already turned into one-hot (``SegmentationLoss`` builds it once for
        Dice and RM), is used instead of ``target``, which is then neither read nor checked. Without
        ``compile`` the gradient wrt ``probabilities`` is analytic (once-differentiable, none to the
        target); with it, the compiled kernels run without activation.
        """
        self._check_spatial_dims(probabilities)
        to_onehot_y = self.to_onehot_y
        if one_hot is not None:
            if not self.to_onehot_y:
                raise ValueError("one_hot is for label targets: this loss has to_onehot_y=False, pass the target only")
            target, to_onehot_y = one_hot, False
        check_input_and_target(probabilities, target, None, to_onehot_y, check_range=check_range)
        return self._loss(probabilities, target, None, offset, full_shape, given_probabilities=True, to_onehot_y=to_onehot_y)

    def _check_spatial_dims(self, input: torch.Tensor) -> None:
        if input.ndim != 2 + self.spatial_dims:
            raise ValueError(
                f"orders {list(self.orders)} are {self.spatial_dims}D but input shape {tuple(input.shape)} "
                f"has {input.ndim - 2} spatial dims"
            )

    def _loss(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        activation: str | None,
        offset: torch.Tensor | None,
        full_shape: torch.Tensor | None,
        given_probabilities: bool = False,
        to_onehot_y: bool | None = None,
    ) -> torch.Tensor:
        to_onehot_y = self.to_onehot_y if to_onehot_y is None else to_onehot_y
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
        options = (activation, first, to_onehot_y)
        if self.compile:
            per_sample = _CompiledResidualMoment.apply(input, target, weights, *options)
        elif given_probabilities:
            per_sample = _ResidualMomentOfProbabilities.apply(input, target, weights, first, to_onehot_y)
        else:
            per_sample = _rm_forward(input, target, weights, *options)
        if self.pixel_reduction == "mean":
            per_sample = per_sample / weights[0].numel()
        return reduce_batch(per_sample, self.reduction)
