"""Checks and conversions shared by every rmseg loss.

Each loss receives network output ``input`` of shape ``(B, C, *S)`` (logits or probabilities) and a
``target`` that is either labels ``(B, 1, *S)`` or one-hot / soft labels ``(B, C, *S)``. The helpers
here turn that pair into ``(probs, onehot)`` of equal shape and dtype with one set of checks, so all
losses fail the same way on bad input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.networks.utils import one_hot

ACTIVATIONS = ("softmax", "sigmoid", None)
BATCH_REDUCTIONS = ("mean", "sum", "none")


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise ValueError naming ``name`` and ``value`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {list(allowed)}")


def check_activation(activation: str | None) -> str | None:
    """Validate an activation name: ``"softmax"``, ``"sigmoid"`` or None (input already probabilities).

    The string ``"none"`` (any case) is accepted as None, so Hydra configs can write it.
    """
    if isinstance(activation, str) and activation.lower() == "none":
        return None
    check_choice("activation", activation, ACTIVATIONS)
    return activation


def check_orders(orders: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Validate moment orders: a non-empty list of tuples of non-negative ints, all of length 2 or 3.

    Returns the orders as a tuple of int tuples, e.g. ``[(2, 0), (0, 2)] -> ((2, 0), (0, 2))``.
    """
    if isinstance(orders, (str, bytes)) or not isinstance(orders, Sequence) or len(orders) == 0:
        raise ValueError(f"orders={orders!r} must be a non-empty list of tuples such as [(2, 0), (0, 2)]")
    checked = []
    for order in orders:
        if isinstance(order, (str, bytes)) or not isinstance(order, Sequence) or len(order) not in (2, 3):
            raise ValueError(f"order {order!r} in orders={orders!r} must be a tuple of 2 (2D) or 3 (3D) ints")
        for p in order:
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                raise ValueError(
                    f"order {tuple(order)!r} in orders={orders!r} has {p!r}: each entry must be a non-negative int"
                )
        checked.append(tuple(int(p) for p in order))
    lengths = {len(o) for o in checked}
    if len(lengths) != 1:
        raise ValueError(f"orders={orders!r} mix lengths {sorted(lengths)}: use all 2D or all 3D orders")
    return tuple(checked)


def reduce_batch(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample losses ``(B,)`` by ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (``(B,)``)."""
    check_choice("reduction", reduction, BATCH_REDUCTIONS)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_range(name: str, tensor: torch.Tensor, low: float, high: float, fix: str) -> None:
    lo, hi = (float(v) for v in torch.aminmax(tensor.float() if not tensor.is_floating_point() else tensor))
    if lo < low or hi > high or tensor.isnan().any():
        raise ValueError(f"{name} values span [{lo}, {hi}] but must lie in [{low}, {high}]; {fix}")


def check_input_and_target(
    input: torch.Tensor, target: torch.Tensor, activation: str | None, to_onehot_y: bool, check_range: bool = True
) -> None:
    """Check a network output ``(B, C, *S)`` and its target without converting them.

    Raises ValueError on: wrong dims, shape mismatch, non-float input, label targets that are not
    ``(B, 1, *S)`` integers in ``[0, C)`` (``to_onehot_y``), one-hot targets that do not have ``C``
    channels or leave ``[0, 1]``, probabilities outside ``[0, 1]`` (``activation`` None), and
    ``softmax`` on a single channel. ``check_range=False`` skips the range checks of probabilities and
    one-hot targets (a pass over each) for tensors the caller built itself.
    """
    activation = check_activation(activation)
    if not torch.is_tensor(input) or not torch.is_tensor(target):
        raise ValueError(f"input and target must be tensors, got {type(input).__name__} and {type(target).__name__}")
    if input.ndim not in (3, 4, 5):
        raise ValueError(f"input shape {tuple(input.shape)} must be (B, C, *S) with 1 to 3 spatial dims")
    if target.ndim != input.ndim or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)}: "
            f"expected ({input.shape[0]}, 1 or {input.shape[1]}, {', '.join(map(str, input.shape[2:]))})"
        )
    if not input.is_floating_point():
        raise ValueError(f"input dtype {input.dtype} must be floating point (logits or probabilities)")
    n_classes = input.shape[1]
    if to_onehot_y:
        if target.shape[1] != 1:
            raise ValueError(
                f"to_onehot_y=True expects label target (B, 1, *S), got shape {tuple(target.shape)}; "
                "pass to_onehot_y=False for one-hot targets"
            )
        if target.is_floating_point() and not torch.equal(target, target.round()):
            raise ValueError("target labels must be integer class indices; got non-integer values")
        lo, hi = (int(v) for v in torch.aminmax(target))
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"target labels span [{lo}, {hi}] but must lie in [0, {n_classes}) for {n_classes} output channels"
            )
    else:
        if target.shape[1] != n_classes:
            raise ValueError(
                f"target has {target.shape[1]} channels but input has {n_classes}; "
                "pass to_onehot_y=True for label targets (B, 1, *S)"
            )
        if check_range:
            _check_range("one-hot target", target, 0.0, 1.0, "pass to_onehot_y=True for label targets")
    if activation == "softmax" and n_classes == 1:
        raise ValueError("activation='softmax' needs at least 2 output channels, got 1; use activation='sigmoid'")
    if activation is None and check_range:
        _check_range("input probability", input.detach(), 0.0, 1.0, "set activation='softmax' or 'sigmoid' for logits")


def first_channel(n_classes: int, include_background: bool) -> int:
    """Index of the first included channel: 0, or 1 without background (MONAI keeps 0, with a warning,
    for single-channel output)."""
    if include_background:
        return 0
    if n_classes == 1:
        warnings.warn("single channel prediction, include_background=False ignored", stacklevel=3)
        return 0
    return 1


def prepare_probabilities_and_onehot(
    input: torch.Tensor,
    target: torch.Tensor,
    activation: str | None = "softmax",
    to_onehot_y: bool = True,
    include_background: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn network output and target into probabilities and one-hot target of equal shape.

    Args:
        input: ``(B, C, *S)`` with 1 to 3 spatial dims: logits (``activation`` set) or probabilities.
        target: labels ``(B, 1, *S)`` with integer values in ``[0, C)`` when ``to_onehot_y``, else
            one-hot or soft labels ``(B, C, *S)`` with values in ``[0, 1]``.
        activation: ``"softmax"`` over channels, ``"sigmoid"`` per channel, or None.
        to_onehot_y: convert label targets to one-hot with ``C`` classes.
        include_background: keep channel 0; when False it is dropped from both (ignored, with a
            warning, for single-channel output, as MONAI does).

    Returns:
        ``(probs, onehot)``, both ``(B, C', *S)`` in the dtype of ``input``, ``C' = C`` or ``C - 1``.

    Raises:
        ValueError: see :func:`check_input_and_target`.
    """
    activation = check_activation(activation)
    check_input_and_target(input, target, activation, to_onehot_y)
    n_classes = input.shape[1]
    if to_onehot_y:
        onehot = one_hot(target.long(), num_classes=n_classes, dim=1, dtype=input.dtype)
    else:
        onehot = target.to(input.dtype)
    if activation == "softmax":
        probs = torch.softmax(input, dim=1)
    elif activation == "sigmoid":
        probs = torch.sigmoid(input)
    else:
        probs = input
    first = first_channel(n_classes, include_background)
    return probs[:, first:], onehot[:, first:]
