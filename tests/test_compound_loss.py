"""SegmentationLoss against hand-worked values and MONAI DiceCELoss + separately computed terms."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from rmseg.losses import MA2020_BASE, ResidualMomentLoss, SegmentationLoss

from conftest import tol


def random_case(seed=0, shape=(2, 3, 8, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, labels


class RecordingTerm(nn.Module):
    """Mean of the logits; records the context keywords it was given."""

    def __init__(self):
        super().__init__()
        self.seen: dict = {}

    def forward(self, input, target, offset=None):
        self.seen = {"offset": offset}
        return input.mean()


class KwargsTerm(nn.Module):
    def forward(self, input, target, **context):
        self.seen = dict(context)
        return input.sum() * 0 + 2.0


def test_hand_worked_total():
    # Zero logits, 2 classes, labels [0, 1]: softmax = 0.5 everywhere.
    logits = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    labels = torch.tensor([[[[0, 1]]]])
    # CE = ln 2. Dice per channel = 1 - (2 * 0.5 + 1e-5) / (1 + 1 + 1e-5) = 0.5 - 2.5e-6 (MONAI smoothing 1e-5).
    dice = 1 - (2 * 0.5 + 1e-5) / (1 + 1 + 1e-5)
    bound = tol(torch.float64, 2)  # float64 throughout; sums of 2 pixels
    # RM order (0, 0) on the foreground channel: (0.5 - 0)^2 + (0.5 - 1)^2 = 0.5; alpha = 2 -> 1.0.
    loss = SegmentationLoss([ResidualMomentLoss([(0, 0)])], alpha=2.0)
    total = loss(logits, labels)
    assert total.item() == pytest.approx(math.log(2) + dice + 1.0, rel=bound)
    parts = loss.last_components
    assert parts["ce_dice"] == pytest.approx(math.log(2) + dice, rel=bound)
    assert parts["ResidualMomentLoss"] == pytest.approx(0.5, rel=bound)
    assert parts["total"] == pytest.approx(total.item(), rel=bound)
    weighted = SegmentationLoss(lambda_ce=0.5, lambda_dice=2.0)(logits, labels)
    assert weighted.item() == pytest.approx(0.5 * math.log(2) + 2.0 * dice, rel=bound)


@pytest.mark.parametrize("share_activation", [True, False])
def test_ma2020_base_worked_by_hand(share_activation):
    # Two 1x1x2 samples, 2 classes. Logits (0, ln 3) give p_fg = 3/4; (0, 0) gives 1/2.
    # Sample 0: p_fg = [3/4, 1/2], labels [1, 0]; sample 1: p_fg = [1/2, 1/2], labels [0, 1].
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[[0.0, 0.0]]], [[[ln3, 0.0]]]], [[[[0.0, 0.0]]], [[[0.0, 0.0]]]]], dtype=torch.float64)
    labels = torch.tensor([[[[[1, 0]]]], [[[[0, 1]]]]])
    # CE: mean of -ln p(true class) over the 4 voxels = (ln(4/3) + 3 ln 2) / 4.
    ce = (math.log(4 / 3) + 3 * math.log(2)) / 4
    # Foreground Dice pooled over the batch: sum(p g) = 3/4 + 1/2; sum(p^2) = 9/16 + 3 * 1/4; sum(g^2) = 2.
    s = 1e-5
    dice = 1 - (2 * (3 / 4 + 1 / 2) + s) / (9 / 16 + 3 / 4 + 2 + s)
    loss = SegmentationLoss(**MA2020_BASE, share_activation=share_activation)
    # float64 throughout on the shared path; MONAI's DiceCELoss rounds part of its work to float32 (4 voxels)
    bound = tol(torch.float64 if share_activation else torch.float32, 4)
    assert loss(logits, labels).item() == pytest.approx(0.5 * (ce + dice), rel=bound)
    # MONAI's default Dice (per sample, per channel, plain denominators) gives another value.
    assert SegmentationLoss(lambda_ce=0.5, lambda_dice=0.5)(logits, labels).item() != pytest.approx(0.5 * (ce + dice), abs=1e-3)


def test_gradient_norms_worked_by_hand():
    # Zero logits, 2 classes, labels [0, 1]: p_fg = 1/2 at both pixels.
    logits = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    labels = torch.tensor([[[[0, 1]]]])
    loss = SegmentationLoss([ResidualMomentLoss([(0, 0)], pixel_reduction="mean")], alpha=3.0, lambda_dice=0.0)
    norms = loss.gradient_norms(logits, labels)
    # RM (0,0), mean over the 2 pixels: (p - g)^2 / 2 per pixel; d/dz_fg = (p - g) p (1 - p) = +-1/8 and
    # d/dz_bg = -d/dz_fg (softmax of two logits): four entries of 1/8, norm 1/4, times alpha = 3.
    assert norms["ResidualMomentLoss"] == pytest.approx(3 * 0.25, rel=tol(torch.float64, 4))  # norm of 4 entries
    # CE, mean over the 2 pixels: d/dz_c = (p_c - 1[c = label]) / 2 = +-1/4: four entries, norm 1/2.
    assert norms["ce_dice"] == pytest.approx(0.5, rel=tol(torch.float64, 4))
    assert not logits.requires_grad  # computed on a detached copy
    loss.weights = (1.0, 0.0)  # a term switched off by a schedule pulls with norm 0
    assert loss.gradient_norms(logits, labels)["ResidualMomentLoss"] == 0.0


@pytest.mark.parametrize("include_background_dice", [True, False])
def test_matches_monai_dicece_plus_rm(include_background_dice):
    logits, labels = random_case(1)
    rm = ResidualMomentLoss([(2, 0), (0, 2)])
    loss = SegmentationLoss([rm], alpha=0.3, lambda_ce=0.7, lambda_dice=1.5, include_background_dice=include_background_dice)
    monai = DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_ce=0.7, lambda_dice=1.5, include_background=include_background_dice
    )
    expected = monai(logits, labels) + 0.3 * rm(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2)
    base_only = SegmentationLoss()
    torch.testing.assert_close(base_only(logits, onehot), DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels))


def test_schedule_weights_base_and_terms():
    logits, labels = random_case(2)
    rm = ResidualMomentLoss([(2, 2)])
    loss = SegmentationLoss([rm], alpha=0.5, schedule=lambda epoch: (1.0 - 0.1 * epoch, 0.1 * epoch))
    base = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
    term = rm(logits, labels)
    torch.testing.assert_close(loss(logits, labels), base)  # epoch 0: (1, 0)
    loss.set_epoch(3)
    assert loss.weights == pytest.approx((0.7, 0.3))
    torch.testing.assert_close(loss(logits, labels), 0.7 * base + 0.3 * 0.5 * term)
    with pytest.raises(ValueError, match=r"epoch=-1"):
        loss.set_epoch(-1)
    bad = SegmentationLoss([rm], schedule=lambda epoch: (1.0, -0.5 * epoch))
    with pytest.raises(ValueError, match=r"schedule\(2\) returned \(1.0, -1.0\)"):
        bad.set_epoch(2)


def test_base_skipped_when_both_lambdas_zero():
    logits, labels = random_case(3)
    rm = ResidualMomentLoss([(0, 2)])
    loss = SegmentationLoss([rm], alpha=4.0, lambda_ce=0, lambda_dice=0)
    assert loss.base is None
    torch.testing.assert_close(loss(logits, labels), 4.0 * rm(logits, labels))
    assert set(loss.last_components) == {"ResidualMomentLoss", "total"}


def test_context_goes_only_to_terms_that_accept_it():
    logits, labels = random_case(4)
    recording, kwargs_term = RecordingTerm(), KwargsTerm()
    volume_rm = ResidualMomentLoss([(2, 0)], coordinate_frame="volume")
    loss = SegmentationLoss([recording, kwargs_term, volume_rm], alpha=1.0)
    offset, full_shape = torch.tensor([[2, 1], [0, 3]]), torch.tensor([12, 10])
    total = loss(logits, labels, offset=offset, full_shape=full_shape, id=["a", "b"])
    assert recording.seen["offset"] is offset
    assert set(kwargs_term.seen) == {"offset", "full_shape", "id"}
    rm_value = volume_rm(logits, labels, offset=offset, full_shape=full_shape)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels) + logits.mean() + 2.0 + rm_value
    torch.testing.assert_close(total, expected)
    names = set(loss.last_components)
    assert names == {"ce_dice", "RecordingTerm", "KwargsTerm", "ResidualMomentLoss", "total"}
    twice = SegmentationLoss([RecordingTerm(), RecordingTerm()])
    twice(logits, labels)
    assert set(twice.last_components) == {"ce_dice", "RecordingTerm_0", "RecordingTerm_1", "total"}


def test_gradient_reaches_logits():
    logits, labels = random_case(6)
    logits.requires_grad_(True)
    SegmentationLoss([ResidualMomentLoss([(2, 0), (0, 2)])], alpha=1.0)(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=-0.1), r"alpha=-0.1"),
        (dict(lambda_ce=-1.0), r"lambda_ce=-1.0"),
        (dict(lambda_dice=float("nan")), r"lambda_dice=nan"),
        (dict(lambda_ce=0, lambda_dice=0), r"empty"),
        (dict(terms=[lambda x, y: x]), r"nn.Module"),
        (dict(schedule=0.5), r"schedule=0.5"),
        (dict(share_activation="yes"), r"share_activation='yes'"),
        (dict(dice_squared=1), r"dice_squared=1"),
        (dict(dice_batch="true"), r"dice_batch='true'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationLoss(**kwargs)


@pytest.mark.parametrize("lambdas", [(1.0, 1.0), (0.7, 1.5), (0.0, 2.0), (1.3, 0.0), (0.0, 0.0)])
@pytest.mark.parametrize("include_background_dice", [True, False])
@pytest.mark.parametrize("one_hot_target", [False, True])
def test_shared_activation_equals_unshared_value_and_gradient(lambdas, include_background_dice, one_hot_target):
    logits, labels = random_case(7)
    target = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2) if one_hot_target else labels
    to_onehot_y = not one_hot_target
    context = dict(offset=torch.tensor([[1, 0], [2, 3]]), full_shape=torch.tensor([10, 9]))
    terms = [
        ResidualMomentLoss([(2, 0), (0, 2)], to_onehot_y=to_onehot_y),
        ResidualMomentLoss([(2, 2)], coordinate_frame="volume", include_background=True, to_onehot_y=to_onehot_y),
        ResidualMomentLoss([(0, 2)], activation="sigmoid", to_onehot_y=to_onehot_y),  # keeps its own activation
        RecordingTerm(),
    ]
    values, grads = [], []
    for share in (False, True):
        loss = SegmentationLoss(
            terms, alpha=0.4, lambda_ce=lambdas[0], lambda_dice=lambdas[1],
            include_background_dice=include_background_dice, share_activation=share,
        )
        x = logits.clone().requires_grad_(True)
        value = loss(x, target, **context)
        value.backward()
        values.append((value.detach(), loss.last_components))
        grads.append(x.grad)
    # the terms' sums over 2 samples x 8 x 6 pixels x 3 classes, in another order; the total mixes signs
    # (the recording term is a mean of logits): bounded relative to the largest component
    bound = tol(torch.float64, 2 * 8 * 6 * 3)
    scale = max(abs(v) for v in values[0][1].values())
    torch.testing.assert_close(values[1][0], values[0][0], rtol=bound, atol=bound * scale)
    assert values[1][1] == pytest.approx(values[0][1], rel=bound, abs=bound * scale)
    torch.testing.assert_close(grads[1], grads[0], rtol=bound, atol=bound * grads[0].abs().max().item())


@pytest.mark.parametrize("include_background_dice", [True, False])
def test_shared_base_matches_monai_dicece_in_float32(include_background_dice):
    logits, labels = random_case(8, shape=(3, 4, 16, 12))
    logits = logits.float()
    monai = DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_ce=0.6, lambda_dice=1.2, include_background=include_background_dice
    )
    loss = SegmentationLoss(lambda_ce=0.6, lambda_dice=1.2, include_background_dice=include_background_dice)
    assert loss.share_activation  # the default
    x, y = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    value, expected = loss(x, labels), monai(y, labels)
    value.backward()
    expected.backward()
    bound = tol(torch.float32, 3 * 16 * 12)  # CE mean and Dice sums over the batch's voxels, float32
    torch.testing.assert_close(value, expected, rtol=bound, atol=0)
    torch.testing.assert_close(x.grad, y.grad, rtol=bound, atol=bound * y.grad.abs().max().item())


def test_shared_path_gradcheck_float64():
    logits, labels = random_case(9, shape=(2, 3, 5, 4))
    rm = ResidualMomentLoss([(2, 0), (1, 1)], coordinate_frame="volume")
    loss = SegmentationLoss([rm], alpha=0.3, lambda_ce=0.8, lambda_dice=1.1, share_activation=True)
    context = dict(offset=torch.tensor([1, 2]), full_shape=torch.tensor([7, 6]))
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, **context), (logits,))


def test_shared_path_names_bad_labels():
    logits, labels = random_case(10)
    loss = SegmentationLoss([ResidualMomentLoss([(2, 0)])])
    with pytest.raises(ValueError, match=r"target labels span \[0, 3\] but must lie in \[0, 3\)"):
        loss(logits, labels + (labels == 2).long())
    with pytest.raises(ValueError, match=r"to_onehot_y=True expects label target"):
        SegmentationLoss([ResidualMomentLoss([(2, 0)])])(logits, torch.softmax(logits, 1))
