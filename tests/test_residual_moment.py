"""ResidualMomentLoss against hand-worked values, Theorem 1, gradients and its input checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rmseg.losses import ResidualMomentLoss
from rmseg.losses._utils import check_orders, prepare_probabilities_and_onehot, reduce_batch

from conftest import tol

F64 = torch.float64

ORDERS_2D = [(2, 0), (0, 2), (2, 2)]
ORDERS_3D = [(2, 0, 0), (0, 2, 0), (0, 0, 2), (2, 2, 2)]


def random_case(shape, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], classes, *shape[1:]), generator=g, dtype=dtype)
    labels = torch.randint(0, classes, (shape[0], 1, *shape[1:]), generator=g)
    return logits, labels


def squared_residual_map(logits, labels, include_background=False):
    """sum over channels of (softmax - one-hot)^2 as numpy (B, *S), written without the rmseg helpers."""
    probs = torch.softmax(logits, dim=1).numpy()
    classes = logits.shape[1]
    onehot = np.stack([(labels[:, 0].numpy() == c) for c in range(classes)], axis=1).astype(np.float64)
    first = 0 if include_background else 1
    return ((probs[:, first:] - onehot[:, first:]) ** 2).sum(axis=1)


def central_moment(values, order, centre_index):
    """sum_x prod_a ((x_a - centre_a) / size_a)^(2 p_a) * values(x) for one sample (numpy)."""
    grids = np.indices(values.shape, dtype=np.float64)
    weight = np.ones(values.shape)
    for axis, power in enumerate(order):
        size = values.shape[axis]
        weight = weight * ((grids[axis] - centre_index(size)) / size) ** (2 * power)
    return float((weight * values).sum())


def test_order_zero_is_plain_sum_of_squared_errors():
    logits, labels = random_case((2, 6, 5))
    loss = ResidualMomentLoss([(0, 0)])(logits, labels)
    expected = squared_residual_map(logits, labels).reshape(2, -1).sum(axis=1).mean()
    assert loss.item() == pytest.approx(expected, rel=tol(F64, 6 * 5 * 2))  # a sample's 30 pixels x 2 classes


@pytest.mark.parametrize(
    "grid, centre",
    [("center", lambda n: (n - 1) / 2), ("paper", lambda n: n / 2 - 1)],
)
@pytest.mark.parametrize("shape, orders", [((2, 7, 6), ORDERS_2D + [(1, 3)]), ((2, 5, 6, 4), ORDERS_3D + [(1, 0, 3)])])
def test_theorem1_loss_is_central_moment_of_squared_residual(shape, orders, grid, centre):
    logits, labels = random_case(shape, seed=len(shape))
    loss = ResidualMomentLoss(orders, grid=grid, reduction="none")(logits, labels)
    r2 = squared_residual_map(logits, labels)
    expected = [sum(central_moment(r2[b], order, centre) for order in orders) for b in range(shape[0])]
    # per sample: pixels x 2 classes x orders terms; each weight a product of up to 2 * 3 powers per axis
    np.testing.assert_allclose(loss.numpy(), expected, rtol=tol(F64, math.prod(shape[1:]) * 2 * len(orders), ops=24))


def test_three_by_three_by_hand():
    pred = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], dtype=torch.float64)[None, None]
    gt = torch.tensor([[0, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=torch.float64)[None, None]
    kwargs = dict(activation=None, to_onehot_y=False, include_background=True)
    # Squared residuals: row 0 -> 0.01 0.04 0.49 (0.54); row 1 -> 0.16 0.25 0.16 (0.57); row 2 -> 0.49 0.64 0.81 (1.94).
    # Default grid, H = 3: C = (i + 0.5 - 1.5) / 3 = -1/3, 0, 1/3.
    assert ResidualMomentLoss([(0, 0)], **kwargs)(pred, gt).item() == pytest.approx(3.05)
    # (2, 0): rows 0 and 2 weigh (1/3)^4 = 1/81, row 1 weighs 0.
    assert ResidualMomentLoss([(2, 0)], **kwargs)(pred, gt).item() == pytest.approx((0.54 + 1.94) / 81)
    # (1, 1): only the corners weigh (1/3 * 1/3)^2 = 1/81: 0.01 + 0.49 + 0.49 + 0.81.
    assert ResidualMomentLoss([(1, 1)], **kwargs)(pred, gt).item() == pytest.approx(1.80 / 81)
    # Paper grid, 1-based i: C = (i - 1.5) / 3 = -1/6, 1/6, 1/2 -> row weights 1/1296, 1/1296, 1/16.
    paper = ResidualMomentLoss([(2, 0)], grid="paper", **kwargs)(pred, gt).item()
    assert paper == pytest.approx(0.54 / 1296 + 0.57 / 1296 + 1.94 / 16)
    # Mean over pixels divides by 9.
    mean = ResidualMomentLoss([(2, 0)], pixel_reduction="mean", **kwargs)(pred, gt).item()
    assert mean == pytest.approx((0.54 + 1.94) / 81 / 9)


@pytest.mark.parametrize("shape, orders", [((3, 8, 6), ORDERS_2D), ((2, 6, 5, 4), ORDERS_3D)])
def test_fused_orders_equal_sum_of_separate_orders(shape, orders):
    logits, labels = random_case(shape, seed=3)
    fused = ResidualMomentLoss(orders, reduction="none")(logits, labels)
    separate = sum(ResidualMomentLoss([o], reduction="none")(logits, labels) for o in orders)
    torch.testing.assert_close(fused, separate, rtol=tol(F64, math.prod(shape[1:]) * 2 * len(orders)), atol=0)


@pytest.mark.parametrize("frame", ["patch", "volume"])
def test_gradcheck_float64(frame):
    logits, labels = random_case((2, 5, 4), seed=4)
    logits.requires_grad_(True)
    loss = ResidualMomentLoss([(2, 0), (1, 1)], coordinate_frame=frame)
    context = dict(offset=torch.tensor([[1, 0], [3, 2]]), full_shape=torch.tensor([9, 7]))
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, **context), (logits,))
    logits3, labels3 = random_case((1, 3, 4, 3), classes=2, seed=5)
    logits3.requires_grad_(True)
    loss3 = ResidualMomentLoss([(2, 0, 2)], include_background=True, activation="sigmoid")
    assert torch.autograd.gradcheck(lambda x: loss3(x, labels3), (logits3,))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("to_onehot_y", [True, False])
def test_gradcheck_every_activation_and_target_form(activation, include_background, to_onehot_y):
    logits, labels = random_case((2, 4, 3), seed=12)
    if activation is None:
        logits = torch.softmax(logits, 1)
    target = labels if to_onehot_y else torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    loss = ResidualMomentLoss(
        [(2, 0), (1, 2)], activation=activation, include_background=include_background, to_onehot_y=to_onehot_y,
        pixel_reduction="mean", reduction="sum",
    )
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits.requires_grad_(True),))


def test_autograd_through_generic_ops_gives_the_same_gradient():
    logits, labels = random_case((2, 6, 5), seed=13)
    logits.requires_grad_(True)
    ResidualMomentLoss(ORDERS_2D)(logits, labels).backward()
    reference = logits.detach().clone().requires_grad_(True)
    probs = torch.softmax(reference, 1)[:, 1:]
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2)[:, 1:].double()
    i = (torch.arange(6, dtype=torch.float64) + 0.5 - 3) / 6
    j = (torch.arange(5, dtype=torch.float64) + 0.5 - 2.5) / 5
    weights = [i[:, None] ** p * j[None, :] ** q for p, q in ORDERS_2D]
    value = sum((w * probs - w * onehot).square().flatten(1).sum(1) for w in weights).mean()
    value.backward()
    # a gradient entry: 3 orders x 3 classes of mixed sign, bounded relative to the largest entry
    bound = tol(F64, 9)
    torch.testing.assert_close(logits.grad, reference.grad, rtol=bound, atol=bound * reference.grad.abs().max().item())


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("to_onehot_y", [True, False])
def test_gradient_is_the_closed_form(activation, include_background, to_onehot_y):
    """Autograd's gradient equals ``dL/dP_c = 2 W (P_c - G_c)`` on included channels (0 elsewhere), taken
    through the activation by hand (softmax: ``P * (dP - sum_c P_c dP_c)``; sigmoid: ``dP * P * (1 - P)``)."""
    logits, labels = random_case((3, 5, 4), seed=15)
    if activation is None:
        logits = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    loss = ResidualMomentLoss(ORDERS_2D, activation=activation, to_onehot_y=to_onehot_y,
                              include_background=include_background, reduction="none")
    grad = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    (loss(x, labels if to_onehot_y else onehot) * grad).sum().backward()
    probs = {"softmax": torch.softmax(logits, 1), "sigmoid": torch.sigmoid(logits), None: logits}[activation]
    first = 0 if include_background else 1
    weights = loss.weight_map((5, 4), torch.float64) * grad.view(3, 1, 1)
    grad_probs = 2 * (probs - onehot) * weights[:, None]
    grad_probs[:, :first] = 0
    expected = {"softmax": probs * (grad_probs - (probs * grad_probs).sum(1, keepdim=True)),
                "sigmoid": grad_probs * probs * (1 - probs), None: grad_probs}[activation]
    bound = tol(F64, 3)  # a gradient entry: the classes' terms of the softmax Jacobian, mixed sign
    torch.testing.assert_close(x.grad, expected, rtol=bound, atol=bound * expected.abs().max().item())


def test_bfloat16_under_cpu_autocast_stays_close_to_float32():
    logits, labels = random_case((2, 16, 12), seed=16, dtype=torch.float32)
    loss = ResidualMomentLoss(ORDERS_2D)
    reference = loss(logits, labels)
    x = logits.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, labels)
    value.backward()
    assert value.dtype == torch.float32  # weights stay float32; the sum is not done in bfloat16
    # each logit rounded once to bfloat16, and the residual's square of it (2 roundings), summed in float32
    assert value.item() == pytest.approx(reference.item(), rel=tol(torch.bfloat16, ops=2))
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_zero_iff_prediction_equals_target():
    _, labels = random_case((1, 4, 6), classes=3, seed=6)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    loss = ResidualMomentLoss([(2, 0), (0, 2)], activation=None, to_onehot_y=False)
    assert loss(onehot, onehot).item() == 0.0
    labelled = ResidualMomentLoss([(2, 0), (0, 2)], activation=None)
    assert labelled(onehot, labels).item() == 0.0
    # Even sizes put no pixel centre on a zero coordinate, so every single-pixel error is seen.
    for i in range(4):
        for j in range(6):
            wrong = onehot.clone()
            wrong[0, :, i, j] = wrong[0, :, i, j].roll(1)
            assert loss(wrong, onehot).item() > 0


@pytest.mark.parametrize("shape, orders", [((2, 7, 6), ORDERS_2D), ((2, 5, 6, 4), ORDERS_3D)])
def test_flip_leaves_even_orders_unchanged_on_default_grid(shape, orders):
    logits, labels = random_case(shape, seed=7)
    loss = ResidualMomentLoss(orders, reduction="none")
    reference = loss(logits, labels)
    for axis in range(2, logits.ndim):
        flipped = loss(logits.flip(axis), labels.flip(axis))
        torch.testing.assert_close(flipped, reference, rtol=tol(F64, math.prod(shape[1:]) * 2 * len(orders)), atol=0)
    paper = ResidualMomentLoss(orders, grid="paper", reduction="none")
    assert not torch.allclose(paper(logits.flip(2), labels.flip(2)), paper(logits, labels))


@pytest.mark.parametrize("shape, orders", [((2, 7, 6), ORDERS_2D), ((2, 5, 6, 4), ORDERS_3D)])
def test_volume_frame_equals_patch_frame_for_whole_image(shape, orders):
    logits, labels = random_case(shape, seed=8)
    patch = ResidualMomentLoss(orders, reduction="none")(logits, labels)
    volume = ResidualMomentLoss(orders, reduction="none", coordinate_frame="volume")
    ndim = len(shape) - 1
    whole = volume(logits, labels, offset=torch.zeros(ndim, dtype=torch.long), full_shape=torch.tensor(shape[1:]))
    torch.testing.assert_close(whole, patch, rtol=tol(F64, math.prod(shape[1:]) * 2 * len(orders)), atol=0)


def test_volume_frame_weights_are_the_full_image_weights_at_the_patch():
    loss = ResidualMomentLoss(ORDERS_3D, coordinate_frame="volume")
    full_shape = (9, 8, 7)
    full = loss.weight_map(full_shape, torch.float64)
    offset = torch.tensor([[0, 0, 0], [5, 3, 4], [2, 4, 1]])
    patch = loss.weight_map((4, 4, 3), torch.float64, offset=offset, full_shape=torch.tensor([full_shape] * 3))
    for b, (i, j, k) in enumerate(offset.tolist()):
        # weights: a product of 3 coordinate powers of order up to 4 (one of each axis), no sum
        torch.testing.assert_close(patch[b], full[i : i + 4, j : j + 4, k : k + 3], rtol=tol(F64, ops=16), atol=0)


def test_patch_crop_in_volume_frame_matches_masked_full_image():
    logits, labels = random_case((1, 10, 9), seed=9)
    full = ResidualMomentLoss(ORDERS_2D, activation=None, to_onehot_y=False)
    probs = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    outside = torch.ones_like(probs, dtype=torch.bool)
    outside[:, :, 3:7, 2:8] = False
    expected = full(torch.where(outside, onehot, probs), onehot)
    crop = ResidualMomentLoss(ORDERS_2D, activation=None, to_onehot_y=False, coordinate_frame="volume")
    got = crop(probs[:, :, 3:7, 2:8], onehot[:, :, 3:7, 2:8], offset=torch.tensor([3, 2]), full_shape=torch.tensor([10, 9]))
    assert got.item() == pytest.approx(expected.item(), rel=tol(F64, 10 * 9 * 2 * len(ORDERS_2D)))


def test_reductions_background_and_target_forms():
    logits, labels = random_case((3, 6, 5), seed=10)
    per_sample = ResidualMomentLoss(ORDERS_2D, reduction="none")(logits, labels)
    assert per_sample.shape == (3,)
    bound = tol(F64, 6 * 5 * 2 * len(ORDERS_2D))  # another order over a sample's terms
    assert ResidualMomentLoss(ORDERS_2D, reduction="sum")(logits, labels).item() == pytest.approx(per_sample.sum().item(), rel=bound)
    assert ResidualMomentLoss(ORDERS_2D)(logits, labels).item() == pytest.approx(per_sample.mean().item(), rel=bound)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2)
    from_onehot = ResidualMomentLoss(ORDERS_2D, to_onehot_y=False, reduction="none")(logits, onehot)
    torch.testing.assert_close(from_onehot, per_sample)
    with_bg = ResidualMomentLoss([(2, 2)], include_background=True, reduction="none")(logits, labels)
    r2_all = squared_residual_map(logits, labels, include_background=True)
    expected = [central_moment(r2_all[b], (2, 2), lambda n: (n - 1) / 2) for b in range(3)]
    np.testing.assert_allclose(with_bg.numpy(), expected, rtol=tol(F64, 6 * 5 * 3, ops=16))


def test_weight_map_cached_per_shape_dtype_device():
    loss = ResidualMomentLoss(ORDERS_2D)
    first = loss.weight_map((8, 6), torch.float32)
    assert loss.weight_map((8, 6), torch.float32) is first
    assert loss.weight_map((8, 6), torch.float64).dtype == torch.float64
    assert loss.weight_map((8, 7), torch.float32).shape == (8, 7)
    assert len(loss._weight_cache) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(orders=[(2, -1)]), r"-1"),
        (dict(orders=[(2.5, 0)]), r"2\.5"),
        (dict(orders=[(2, 0), (2, 0, 0)]), r"mix lengths"),
        (dict(orders=[(2,)]), r"\(2,\)"),
        (dict(orders=[]), r"non-empty"),
        (dict(orders=[(2, 0)], grid="corner"), r"grid='corner'"),
        (dict(orders=[(2, 0)], reduction="max"), r"reduction='max'"),
        (dict(orders=[(2, 0)], pixel_reduction="avg"), r"pixel_reduction='avg'"),
        (dict(orders=[(2, 0)], activation="relu"), r"activation='relu'"),
        (dict(orders=[(2, 0)], coordinate_frame="world"), r"coordinate_frame='world'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResidualMomentLoss(**kwargs)


def test_bad_inputs_name_the_problem():
    logits, labels = random_case((2, 6, 5), seed=11)
    loss = ResidualMomentLoss(ORDERS_2D)
    with pytest.raises(ValueError, match=r"2D but input shape \(2, 3, 6, 5, 1\)"):
        loss(logits[..., None], labels[..., None])
    with pytest.raises(ValueError, match=r"target shape \(2, 1, 6, 4\) does not match"):
        loss(logits, labels[..., :4])
    with pytest.raises(ValueError, match=r"labels span \[0, 3\].*\[0, 3\)"):
        loss(logits, labels.clamp(max=2) + (labels == 2).long())
    with pytest.raises(ValueError, match=r"integer class indices"):
        loss(logits, labels.double() + 0.5)
    no_act = ResidualMomentLoss(ORDERS_2D, activation=None)
    with pytest.raises(ValueError, match=r"input probability values span .*activation"):
        no_act(logits, labels)
    with pytest.raises(ValueError, match=r"to_onehot_y=False"):
        loss(logits, torch.zeros_like(logits))
    volume = ResidualMomentLoss(ORDERS_2D, coordinate_frame="volume")
    with pytest.raises(ValueError, match=r"needs offset"):
        volume(logits, labels)
    with pytest.raises(ValueError, match=r"does not fit in full_shape"):
        volume(logits, labels, offset=torch.tensor([2, 0]), full_shape=torch.tensor([7, 5]))
    with pytest.raises(ValueError, match=r"full_shape shape \(3,\)"):
        volume(logits, labels, offset=torch.tensor([0, 0]), full_shape=torch.tensor([7, 5, 3]))
    with pytest.raises(ValueError, match=r"offset must hold integers"):
        volume(logits, labels, offset=torch.tensor([0.0, 0.0]), full_shape=torch.tensor([7, 5]))


def test_shared_helpers():
    assert check_orders([[2, 0], (0, 2)]) == ((2, 0), (0, 2))
    values = torch.tensor([1.0, 2.0, 6.0])
    assert reduce_batch(values, "mean").item() == 3.0
    assert reduce_batch(values, "sum").item() == 9.0
    assert reduce_batch(values, "none") is values
    logits = torch.zeros(1, 2, 2, 2)
    probs, onehot = prepare_probabilities_and_onehot(logits, torch.tensor([[[[0, 1], [1, 1]]]]), "sigmoid", True, True)
    torch.testing.assert_close(probs, torch.full((1, 2, 2, 2), 0.5))
    assert onehot[0, 1].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    with pytest.warns(UserWarning, match="single channel"):
        prepare_probabilities_and_onehot(logits[:, :1], torch.ones(1, 1, 2, 2), "sigmoid", False, False)
    with pytest.raises(ValueError, match="at least 2 output channels"):
        prepare_probabilities_and_onehot(logits[:, :1], torch.ones(1, 1, 2, 2), "softmax", False, True)
    with pytest.raises(ValueError, match=r"one-hot target values span \[2.0, 2.0\]"):
        prepare_probabilities_and_onehot(logits, 2 * torch.ones(1, 2, 2, 2), "softmax", False, True)


def test_from_probabilities_by_hand():
    # Foreground probabilities [0.25, 0.5] against labels [0, 1]: residuals 0.25, -0.5.
    # Orders (0, 0) and (0, 2) on a 1x2 image: C_j = -0.25, 0.25, so W = 1 + 0.25^4 = 257/256 at both pixels.
    fg = torch.tensor([0.25, 0.5], dtype=torch.float64)
    probs = torch.stack([1 - fg, fg]).view(1, 2, 1, 2).requires_grad_(True)
    labels = torch.tensor([[[[0, 1]]]])
    loss = ResidualMomentLoss([(0, 0), (0, 2)]).from_probabilities(probs, labels)
    assert loss.item() == pytest.approx((0.25**2 + 0.5**2) * 257 / 256)
    loss.backward()
    expected = torch.tensor([[0.0, 0.0], [2 * 0.25, 2 * -0.5]], dtype=torch.float64) * 257 / 256
    torch.testing.assert_close(probs.grad.view(2, 2), expected)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("to_onehot_y", [True, False])
@pytest.mark.parametrize("frame", ["patch", "volume"])
def test_from_probabilities_equals_forward_on_logits(include_background, to_onehot_y, frame):
    logits, labels = random_case((2, 6, 5), seed=21)
    target = labels if to_onehot_y else torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2)
    context = dict(offset=torch.tensor([[1, 0], [3, 2]]), full_shape=torch.tensor([9, 7]))
    loss = ResidualMomentLoss(
        ORDERS_2D, include_background=include_background, to_onehot_y=to_onehot_y, coordinate_frame=frame,
        pixel_reduction="mean", reduction="none",
    )
    values, grads = [], []
    for shared in (False, True):
        x = logits.clone().requires_grad_(True)
        value = loss.from_probabilities(torch.softmax(x, 1), target, **context) if shared else loss(x, target, **context)
        (value * torch.tensor([0.3, 1.7], dtype=torch.float64)).sum().backward()
        values.append(value.detach())
        grads.append(x.grad)
    assert values[0].shape == (2,)
    bound = tol(F64, 6 * 5 * 3 * len(ORDERS_2D))
    torch.testing.assert_close(values[1], values[0], rtol=bound, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=bound, atol=bound * grads[0].abs().max().item())


def test_from_probabilities_gradcheck_float64():
    logits, labels = random_case((2, 5, 4), seed=22)
    loss = ResidualMomentLoss(ORDERS_2D, coordinate_frame="volume")
    context = dict(offset=torch.tensor([2, 1]), full_shape=torch.tensor([8, 6]))
    probs = torch.softmax(logits, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss.from_probabilities(p, labels, **context), (probs,))
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: loss.from_probabilities(torch.softmax(z, 1), labels, **context), (x,))


def test_from_probabilities_checks_its_input():
    logits, labels = random_case((1, 4, 4), seed=23)
    loss = ResidualMomentLoss(ORDERS_2D)
    with pytest.raises(ValueError, match=r"input probability values span .* set activation"):
        loss.from_probabilities(2 * torch.softmax(logits, 1), labels)
    with pytest.raises(ValueError, match=r"target labels span \[0, 3\]"):
        loss.from_probabilities(torch.softmax(logits, 1), labels.clamp(max=2) + (labels == 2).long())
    with pytest.raises(ValueError, match=r"are 2D but input shape"):
        loss.from_probabilities(torch.softmax(logits, 1)[..., None], labels[..., None])
    unchecked = loss.from_probabilities(2 * torch.softmax(logits, 1), labels, check_range=False)
    assert torch.isfinite(unchecked)


def test_from_probabilities_bfloat16_stays_close_to_float32():
    logits, labels = random_case((2, 16, 12), seed=24, dtype=torch.float32)
    loss = ResidualMomentLoss(ORDERS_2D)
    reference = loss(logits, labels)
    probs = torch.softmax(logits, 1).to(torch.bfloat16).requires_grad_(True)
    value = loss.from_probabilities(probs, labels)
    value.backward()
    assert value.dtype == torch.float32
    # each probability rounded once to bfloat16, and the residual's square of it (2 roundings)
    assert value.item() == pytest.approx(reference.item(), rel=tol(torch.bfloat16, ops=2))
    assert probs.grad.dtype == torch.bfloat16 and torch.isfinite(probs.grad.float()).all()


def test_from_probabilities_with_caller_one_hot_equals_label_target():
    logits, labels = random_case((2, 6, 5), seed=26)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).to(logits.dtype)
    loss = ResidualMomentLoss(ORDERS_2D, reduction="none")
    probs = torch.softmax(logits, 1)
    values, grads = [], []
    for given in (None, onehot):
        p = probs.clone().requires_grad_(True)
        value = loss.from_probabilities(p, labels, one_hot=given, check_range=given is None)
        value.sum().backward()
        values.append(value.detach())
        grads.append(p.grad)
    bound = tol(F64, 6 * 5 * 3 * len(ORDERS_2D))
    torch.testing.assert_close(values[1], values[0], rtol=bound, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=bound, atol=bound * grads[0].abs().max().item())
    with pytest.raises(ValueError, match=r"one_hot is for label targets.*to_onehot_y=False"):
        ResidualMomentLoss(ORDERS_2D, to_onehot_y=False).from_probabilities(probs, onehot, one_hot=onehot)
    with pytest.raises(ValueError, match=r"target has 2 channels but input has 3"):
        loss.from_probabilities(probs, labels, one_hot=onehot[:, :2])


def test_from_probabilities_float32_sum_stays_accurate_on_a_large_image():
    # 2 x 512 x 512 foreground values per sample: a naive float32 running sum drifts by ~1e-4.
    logits, labels = random_case((2, 512, 512), seed=27, dtype=torch.float32)
    loss = ResidualMomentLoss(ORDERS_2D)
    reference = loss(logits.double(), labels).item()
    # pairwise sums keep float32 within log2(n) roundings (a naive running sum is off by ~1e-4)
    bound = tol(torch.float32, 512 * 512 * 2 * len(ORDERS_2D), summation="pairwise")
    assert loss.from_probabilities(torch.softmax(logits, 1), labels).item() == pytest.approx(reference, rel=bound)


# --- sigmoid and given probabilities against Eq. 2 and 4 written out pixel by pixel -----------------


def moment_loss_by_loops(probs, onehot, orders, first, pixel_reduction="sum"):
    """Per-sample sum over orders, channels c >= first and pixels of (mu(P) - mu(G))^2 with
    mu_pq(f)(x) = C_i^p C_j^q [C_k^r] f(x) and C_i = (i + 0.5 - H/2) / H (numpy, explicit loops)."""
    batch, channels, *shape = probs.shape
    out = []
    for b in range(batch):
        total = 0.0
        for order in orders:
            for c in range(first, channels):
                for index in itertools.product(*(range(n) for n in shape)):
                    factor = 1.0
                    for i, n, p in zip(index, shape, order):
                        factor *= ((i + 0.5 - n / 2) / n) ** p
                    total += (factor * probs[(b, c, *index)] - factor * onehot[(b, c, *index)]) ** 2
        out.append(total / (np.prod(shape) if pixel_reduction == "mean" else 1))
    return np.array(out)


SIGMOID_CASES = [((2, 3, 4, 5), [(2, 0), (0, 2), (1, 3)]), ((2, 2, 3, 4, 2), [(2, 0, 0), (0, 2, 2), (1, 0, 1)])]


def by_loops_tol(shape, orders):
    """:func:`tol` of a sample's loss against :func:`moment_loss_by_loops`: channels x pixels x orders terms, each
    a product of coordinate powers up to 3 per axis and a sigmoid."""
    return tol(F64, math.prod(shape[1:]) * len(orders), ops=8 + 3 * (len(shape) - 2))


@pytest.mark.parametrize("shape, orders", SIGMOID_CASES)
@pytest.mark.parametrize("include_background", [False, True])
def test_sigmoid_multilabel_target_by_loops(shape, orders, include_background):
    """Sigmoid per channel against a one-hot-style (B, C, *S) target whose channels overlap (multi-label)."""
    rng = np.random.default_rng(31)
    logits = rng.normal(size=shape)
    target = (rng.random(shape) < 0.5).astype(np.float64)
    target[:, :, (0,) * (len(shape) - 2)] = 1.0  # a pixel on in every channel at once
    probs = 1.0 / (1.0 + np.exp(-logits))
    loss = ResidualMomentLoss(orders, include_background=include_background, activation="sigmoid",
                              to_onehot_y=False, reduction="none")
    got = loss(torch.from_numpy(logits), torch.from_numpy(target))
    expected = moment_loss_by_loops(probs, target, orders, 0 if include_background else 1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=by_loops_tol(shape, orders))
    batch_mean = ResidualMomentLoss(orders, include_background=include_background, activation="sigmoid",
                                    to_onehot_y=False)(torch.from_numpy(logits), torch.from_numpy(target))
    assert batch_mean.item() == pytest.approx(expected.mean(), rel=by_loops_tol(shape, orders))


@pytest.mark.parametrize("shape, orders", SIGMOID_CASES)
def test_sigmoid_label_target_is_one_hot_per_channel(shape, orders):
    """Labels (B, 1, *S) under sigmoid: channel c's target is (label == c); background dropped by default."""
    rng = np.random.default_rng(32)
    logits = rng.normal(size=shape)
    labels = rng.integers(0, shape[1], size=(shape[0], 1, *shape[2:]))
    onehot = np.concatenate([(labels == c) for c in range(shape[1])], axis=1).astype(np.float64)
    probs = 1.0 / (1.0 + np.exp(-logits))
    got = ResidualMomentLoss(orders, activation="sigmoid", pixel_reduction="mean", reduction="sum")(
        torch.from_numpy(logits), torch.from_numpy(labels))
    expected = moment_loss_by_loops(probs, onehot, orders, 1, pixel_reduction="mean").sum()
    assert got.item() == pytest.approx(expected, rel=by_loops_tol(shape, orders))


def test_sigmoid_single_channel_keeps_its_only_channel():
    """One sigmoid channel (binary segmentation): include_background=False is ignored, with a warning."""
    rng = np.random.default_rng(33)
    logits = rng.normal(size=(2, 1, 3, 4))
    target = (rng.random((2, 1, 3, 4)) < 0.5).astype(np.float64)
    with pytest.warns(UserWarning, match="single channel"):
        got = ResidualMomentLoss([(2, 0), (0, 2)], activation="sigmoid", to_onehot_y=False, reduction="none")(
            torch.from_numpy(logits), torch.from_numpy(target))
    expected = moment_loss_by_loops(1.0 / (1.0 + np.exp(-logits)), target, [(2, 0), (0, 2)], 0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=by_loops_tol((2, 1, 3, 4), [(2, 0), (0, 2)]))


@pytest.mark.parametrize("shape, orders", SIGMOID_CASES)
@pytest.mark.parametrize("to_onehot_y", [True, False])
def test_given_probabilities_by_loops(shape, orders, to_onehot_y):
    """activation=None: the input is used as it is (here per-channel values that need not sum to 1)."""
    rng = np.random.default_rng(34)
    probs = rng.random(shape)
    labels = rng.integers(0, shape[1], size=(shape[0], 1, *shape[2:]))
    onehot = np.concatenate([(labels == c) for c in range(shape[1])], axis=1).astype(np.float64)
    target = labels if to_onehot_y else onehot
    for include_background in (False, True):
        loss = ResidualMomentLoss(orders, include_background=include_background, activation=None,
                                  to_onehot_y=to_onehot_y, reduction="none")
        got = loss(torch.from_numpy(probs), torch.from_numpy(target))
        expected = moment_loss_by_loops(probs, onehot, orders, 0 if include_background else 1)
        np.testing.assert_allclose(got.numpy(), expected, rtol=by_loops_tol(shape, orders))
