"""Rival location-aware losses: hand-worked values, MONAI agreement, gradients, ranges, empty masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.losses import HausdorffDTLoss

from rmseg.evaluation import head_of
from rmseg.losses import (
    AdaptiveRegionLoss,
    BoundaryLoss,
    HausdorffDistanceLoss,
    RebalanceSchedule,
    RegionWiseLoss,
    SegmentationLoss,
    SignedDistanceLoss,
)

from rmseg.models.heads import sdf_probabilities

from conftest import tol

# One 1D sample, two classes: labels [0, 0, 1, 1, 1, 0] and foreground probabilities P1.
# Class 1: d_in = [0, 0, 1, 2, 1, 0], d_out = [2, 1, 0, 0, 0, 1].
LABELS = torch.tensor([[[0, 0, 1, 1, 1, 0]]])
P1 = torch.tensor([0.1, 0.6, 0.7, 0.9, 0.4, 0.2], dtype=torch.float64)


def two_class_probs(p1: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - p1, p1])[None]  # (1, 2, 6)


# ---------------------------------------------------------------- schedule
def test_rebalance_schedule_values() -> None:
    s = RebalanceSchedule()
    assert s(0) == (1.0, 0.0)
    assert s(1) == pytest.approx((0.99, 0.01))
    assert s(50) == pytest.approx((0.5, 0.5))
    assert s(99) == pytest.approx((0.01, 0.99))
    assert s(100) == (0.01, 0.99) and s(10_000) == (0.01, 0.99)
    hd = RebalanceSchedule(step=0.001, floor=0.001)
    assert hd(500) == pytest.approx((0.5, 0.5)) and hd(5000) == (0.001, 0.999)


@pytest.mark.parametrize("kwargs", [{"start": 1.5}, {"step": -0.1}, {"floor": 2.0}, {"start": "1"}])
def test_rebalance_schedule_bad_args(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RebalanceSchedule(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        RebalanceSchedule()(-1)


def test_schedule_drives_segmentation_loss() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))
    boundary = BoundaryLoss()
    loss = SegmentationLoss(terms=[boundary], alpha=1.0, schedule=RebalanceSchedule())
    base = SegmentationLoss(terms=[], alpha=0.0)
    loss.set_epoch(30)  # base weight 0.7
    expected = 0.7 * base(x, y) + 0.3 * boundary(x, y)
    bound = tol(torch.float32, 2 * 2 * 8 * 8)  # float32 sums over the batch's voxels and classes; terms O(1)
    torch.testing.assert_close(loss(x, y), expected, rtol=bound, atol=bound)


# ---------------------------------------------------------------- boundary
def test_boundary_hand_worked() -> None:
    # signed distance of class 1: [2, 1, 0, -2, 0, 1]
    expected = (0.1 * 2 + 0.6 * 1 + 0.9 * -2 + 0.2 * 1) / 6
    value = BoundaryLoss(activation=None)(two_class_probs(P1), LABELS)
    assert value.item() == pytest.approx(expected)


def test_boundary_documented_range_and_multiclass_mean() -> None:
    torch.manual_seed(1)
    y = torch.zeros(1, 1, 12, 12, dtype=torch.long)
    y[..., 3:9, 2:8] = 1
    y[..., 5:7, 4:6] = 2
    loss = BoundaryLoss(activation=None, reduction="none")
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 3, 1, 2).double()
    low, high = loss(onehot, y), loss(1 - onehot, y)  # perfect and inverted predictions
    assert low.item() < 0 < high.item()
    for _ in range(5):
        probs = torch.softmax(torch.randn(1, 3, 12, 12, dtype=torch.float64) * 3, 1)
        value = loss(probs, y)
        assert low.item() <= value.item() <= high.item()
        # mean over foreground classes of the per-class binary losses
        per_class = [
            BoundaryLoss(activation=None)(torch.stack([1 - probs[:, c], probs[:, c]], 1), (y == c).long())
            for c in (1, 2)
        ]
        assert value.item() == pytest.approx(sum(per_class).item() / 2)


# ---------------------------------------------------------------- Hausdorff distance
def test_hausdorff_foreground_hand_worked() -> None:
    # prediction p1 > 0.5 -> [0, 1, 1, 1, 0, 0]: d_pred = [0, 1, 2, 1, 0, 0]; d_gt = [0, 0, 1, 2, 1, 0]
    g = torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.float64)
    weight = torch.tensor([0, 1, 4 + 1, 1 + 4, 1, 0], dtype=torch.float64)
    expected = ((P1 - g) ** 2 * weight).mean()
    value = HausdorffDistanceLoss(activation=None)(two_class_probs(P1), LABELS)
    assert value.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("shape", [(2, 3, 14, 12), (2, 2, 9, 8, 6)])
def test_hausdorff_inside_outside_equals_monai(shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    x = torch.randn(shape) * 2
    y = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]))
    ours = HausdorffDistanceLoss(variant="inside_outside")(x, y)
    monai = HausdorffDTLoss(softmax=True, to_onehot_y=True, include_background=False)(x, y)
    # float32 means of distance-weighted squared errors (one sign) over every voxel and class, in another order
    torch.testing.assert_close(ours, monai, rtol=tol(torch.float32, math.prod(shape)), atol=0)


def test_hausdorff_zero_iff_exact_and_nonnegative() -> None:
    y = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    y[..., 2:7, 3:8] = 1
    onehot = torch.cat([1 - y, y], 1).double()
    for variant in ("foreground", "inside_outside"):
        loss = HausdorffDistanceLoss(variant=variant, activation=None)
        assert loss(onehot, y).item() == 0.0
        assert loss(torch.full_like(onehot, 0.5), y).item() > 0


# ---------------------------------------------------------------- SDF
def test_sdf_hand_worked() -> None:
    phi = torch.tensor([1, 0.5, 0, -1, 0, 0.5], dtype=torch.float64)  # normalised SDF of class 1
    g = torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.float64)
    raw = torch.tensor([0.3, 0.2, -0.1, -0.8, 0.05, 0.4], dtype=torch.float64)
    f, s, k = torch.tanh(raw), 1e-5, 20.0
    inter = (f * phi).sum()
    product = (inter + s) / (inter + (f**2).sum() + (phi**2).sum() + s)
    h = torch.sigmoid(-k * f)
    dice = 1 - (2 * (h * g).sum() + s) / ((h**2).sum() + (g**2).sum() + s)
    expected = dice + 10 * ((f - phi).abs().mean() - product)
    output = torch.stack([torch.zeros(6, dtype=torch.float64), raw])[None]
    value = SignedDistanceLoss(k=k)(output, LABELS)
    assert value.item() == pytest.approx(expected.item())


def test_sdf_probabilities_match_thresholded_sdf() -> None:
    torch.manual_seed(3)
    output = torch.randn(2, 3, 7, 5)
    probs = sdf_probabilities(output)
    f = torch.tanh(output[:, 1:])
    assert probs.shape == output.shape
    label = probs.argmax(1)
    inside_any = (f < 0).any(1)
    assert torch.equal(label == 0, ~inside_any)  # background iff no SDF is negative
    chosen = torch.gather(f, 1, (label.clamp(min=1) - 1)[:, None])[:, 0]
    assert (chosen[inside_any] < 0).all()  # a foreground label only where its SDF is negative
    two = sdf_probabilities(output[:, :2])
    assert torch.equal(two.argmax(1), (f[:, 0] < 0).long())
    torch.testing.assert_close(two.sum(1), torch.ones(2, 7, 5))


def test_evaluation_thresholds_with_the_steepness_the_loss_trained_with() -> None:
    output = torch.full((1, 2, 1, 3), 0.0).index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor([-2e-3]))
    loss_cfg = {"_target_": "rmseg.losses.SegmentationLoss",
                "terms": [{"_target_": "rmseg.losses.SignedDistanceLoss", "k": 100.0}]}
    head = head_of({"name": "vnet3d"}, loss_cfg)  # a run's config: the head follows from its loss
    # f = tanh(-0.002) = -0.0019999973; p_1 = sigmoid(-k f): k = 100 -> sigmoid(0.2), k = 1500 -> sigmoid(3)
    f = math.tanh(-2e-3)
    bound = 3 * tol(torch.float32)  # float32 tanh, product, sigmoid; |k f| <= 3 amplifies the rounding of f
    assert head(output)[0, 1, 0, 0].item() == pytest.approx(1 / (1 + math.exp(100 * f)), rel=bound)
    assert head_of({"name": "vnet3d"}, {"terms": [{"_target_": "rmseg.losses.SignedDistanceLoss"}]})(output)[
        0, 1, 0, 0].item() == pytest.approx(1 / (1 + math.exp(1500 * f)), rel=bound)


def test_sdf_range_bounds() -> None:
    torch.manual_seed(4)
    y = torch.zeros(2, 1, 9, 9, dtype=torch.long)
    y[:, :, 2:6, 3:7] = 1
    loss = SignedDistanceLoss(reduction="none")
    for scale in (0.1, 1.0, 10.0):
        value = loss(torch.randn(2, 2, 9, 9) * scale, y)
        assert (value >= -10 / 3).all() and (value <= 1 + 30).all()


# ---------------------------------------------------------------- region-wise
def test_region_wise_hand_worked() -> None:
    # RRW class 0 (mask [1,1,0,0,0,1]: d_in = [2,1,0,0,0,1]) = [-1, -0.5, 1, 1, 1, -0.5]
    # RRW class 1 = [1, 1, -0.5, -1, -0.5, 1]
    rrw0 = torch.tensor([-1, -0.5, 1, 1, 1, -0.5], dtype=torch.float64)
    rrw1 = torch.tensor([1, 1, -0.5, -1, -0.5, 1], dtype=torch.float64)
    expected = ((1 - P1) * rrw0 + P1 * rrw1).sum() / 12
    value = RegionWiseLoss(activation=None)(two_class_probs(P1), LABELS)
    assert value.item() == pytest.approx(expected.item())


def test_region_wise_range_and_minimum() -> None:
    torch.manual_seed(5)
    y = torch.randint(0, 3, (2, 1, 8, 8))
    loss = RegionWiseLoss(reduction="none")
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 3, 1, 2).double()
    best = RegionWiseLoss(activation=None, reduction="none")(onehot, y)
    for _ in range(5):
        value = loss(torch.randn(2, 3, 8, 8, dtype=torch.float64) * 3, y)
        assert (value >= best - 1e-12).all() and (value.abs() <= 1).all()


# ---------------------------------------------------------------- adaptive region-specific
def test_adaptive_region_hand_worked() -> None:
    # one channel, 4 voxels, 2 regions of 2 voxels; counts are region means
    p = torch.tensor([[[0.8, 0.2, 0.6, 0.0]]], dtype=torch.float64)
    g = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    s, A, B = 1e-5, 0.3, 0.4

    def tversky_term(tp: float, fp: float, fn: float) -> float:
        a = A + B * (fp + s) / (fp + fn + s)
        b = A + B * (fn + s) / (fp + fn + s)
        return 1 - (tp + s) / (tp + a * fp + b * fn + s)

    expected = (tversky_term(0.8 / 2, 0.2 / 2, 0.2 / 2) + tversky_term(0.0, 0.6 / 2, 0.0)) / 2
    loss = AdaptiveRegionLoss(num_regions=2, activation=None, to_onehot_y=False)
    assert loss(p, g).item() == pytest.approx(expected)


def test_adaptive_region_exact_is_zero_and_3d() -> None:
    y = torch.randint(0, 2, (2, 1, 8, 8, 6))
    onehot = torch.cat([1 - y, y], 1).double()
    loss = AdaptiveRegionLoss(num_regions=(2, 4, 3), activation=None)
    assert loss(onehot, y).item() == pytest.approx(0.0, abs=tol(torch.float64, 2 * 8 * 8 * 6))  # a loss of O(1) scale
    value = AdaptiveRegionLoss(num_regions=(2, 4, 3))(torch.randn(2, 2, 8, 8, 6), y)
    assert 0 < value.item() < 1


def test_adaptive_region_bad_regions() -> None:
    with pytest.raises(ValueError, match="num_regions"):
        AdaptiveRegionLoss(num_regions=0)
    with pytest.raises(ValueError, match="num_regions"):
        AdaptiveRegionLoss(num_regions=(4, 4))(torch.randn(1, 2, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="num_regions"):
        AdaptiveRegionLoss(num_regions=16)(torch.randn(1, 2, 8, 8), torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------- shared properties
ALL_LOSSES = {
    "boundary": lambda: BoundaryLoss(),
    "hd_foreground": lambda: HausdorffDistanceLoss(),
    "hd_inside_outside": lambda: HausdorffDistanceLoss(variant="inside_outside"),
    "sdf": lambda: SignedDistanceLoss(k=5.0),
    "region_wise": lambda: RegionWiseLoss(),
    "adaptive_region": lambda: AdaptiveRegionLoss(num_regions=2),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (1, 2, 3, 4, 2)])
def test_gradcheck_float64(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(6)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]))
    loss = ALL_LOSSES[name]()
    # the thresholded prediction of the HD loss must not flip under the finite-difference step
    x.data[x.data.abs() < 1e-3] += 0.01
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_empty_masks_finite(name: str) -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = torch.zeros(2, 1, 8, 8, dtype=torch.long)  # all background: classes 1 and 2 missing
    y[1, :, 2:5, 2:5] = 2  # sample 1: class 1 still missing
    value = ALL_LOSSES[name]()(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_reduction_and_batch(name: str) -> None:
    torch.manual_seed(7)
    x, y = torch.randn(3, 2, 8, 8), torch.randint(0, 2, (3, 1, 8, 8))
    loss = ALL_LOSSES[name]()
    loss.reduction = "none"
    per_sample = loss(x, y)
    assert per_sample.shape == (3,)
    singles = torch.stack([loss(x[i : i + 1], y[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(per_sample, singles)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: BoundaryLoss(reduction="avg"), "reduction"),
        (lambda: BoundaryLoss(activation="relu"), "activation"),
        (lambda: HausdorffDistanceLoss(variant="both"), "variant"),
        (lambda: HausdorffDistanceLoss(distance_exponent=0), "distance_exponent"),
        (lambda: RegionWiseLoss(backend="gpu"), "backend"),
        (lambda: SignedDistanceLoss(k=0), "k"),
        (lambda: SignedDistanceLoss(sdf_weight=0, dice_weight=0), "empty"),
        (lambda: AdaptiveRegionLoss(A=-1), "A"),
        (lambda: AdaptiveRegionLoss(smooth=0), "smooth"),
    ],
)
def test_bad_arguments(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="labels span"):
        BoundaryLoss()(torch.randn(1, 2, 4, 4), torch.full((1, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="C >= 2"):
        SignedDistanceLoss()(torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert math.isfinite(RegionWiseLoss()(torch.randn(1, 2, 4), torch.zeros(1, 1, 4)).item())
    assert np.isfinite(BoundaryLoss()(torch.randn(1, 2, 5), torch.ones(1, 1, 5)).item())


@pytest.mark.parametrize("cls", [BoundaryLoss, HausdorffDistanceLoss, SignedDistanceLoss, RegionWiseLoss])
def test_cached_ground_truth_maps_give_the_same_loss(cls) -> None:
    torch.manual_seed(8)
    x, y = torch.randn(2, 3, 9, 7), torch.randint(0, 3, (2, 1, 9, 7))
    cached, plain = cls(cache_size=16), cls()
    for _ in range(2):
        torch.testing.assert_close(cached(x, y), plain(x, y))
    assert cached.cache.hits > 0
    with pytest.raises(ValueError, match="cache_size"):
        cls(cache_size=-1)


# ---------------------------------------------------------------- one transfer per step
class TransferCounter:
    """Counts the copies between torch and the host EDTs while installed (see ``counter``).

    ``to_host``: tensor -> numpy conversions (``Tensor.numpy``, which ``np.asarray(tensor)`` also
    calls): scipy and edt read numpy arrays, so every map computation needs one, and on an
    accelerator each is a device-to-host copy. ``to_device``: numpy -> tensor conversions
    (``torch.from_numpy`` / ``torch.as_tensor``), one per host-to-device copy of maps. Scalar reads of
    the shared input checks (``rmseg.losses._utils``, every loss) are not map transfers and not counted.
    """

    def __init__(self, monkeypatch) -> None:
        self.to_host = self.to_device = 0
        numpy, from_numpy, as_tensor = torch.Tensor.numpy, torch.from_numpy, torch.as_tensor

        def counted_numpy(tensor, *args, **kwargs):
            self.to_host += 1
            return numpy(tensor, *args, **kwargs)

        def counted_from_numpy(array):
            self.to_device += 1
            return from_numpy(array)

        def counted_as_tensor(data, *args, **kwargs):
            self.to_device += isinstance(data, np.ndarray)
            return as_tensor(data, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "numpy", counted_numpy)
        monkeypatch.setattr(torch, "from_numpy", counted_from_numpy)
        monkeypatch.setattr(torch, "as_tensor", counted_as_tensor)

    def reset(self) -> None:
        self.to_host = self.to_device = 0


@pytest.fixture
def counter(monkeypatch) -> TransferCounter:
    return TransferCounter(monkeypatch)


def test_transfer_counter_sees_each_copy(counter: TransferCounter) -> None:
    # the counter catches the pattern the HD loss had (one copy per map call) and MONAI's per-slice copies
    from rmseg.losses.distance_maps import foreground_distance_map

    mask = torch.rand(2, 2, 8, 8) > 0.5
    foreground_distance_map(mask)
    foreground_distance_map(mask)
    assert (counter.to_host, counter.to_device) == (2, 2)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))
    counter.reset()
    HausdorffDTLoss(softmax=True, to_onehot_y=True)(x, y)
    assert counter.to_host > 1


DISTANCE_MAP_LOSSES = {
    "boundary": BoundaryLoss,
    "hd_foreground": HausdorffDistanceLoss,
    "hd_inside_outside": lambda **kw: HausdorffDistanceLoss(variant="inside_outside", **kw),
    "sdf": lambda **kw: SignedDistanceLoss(k=5.0, **kw),
    "region_wise": RegionWiseLoss,
}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cache_size", [0, 16])
@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (2, 3, 8, 7, 5)])
@pytest.mark.parametrize("name", DISTANCE_MAP_LOSSES)
def test_one_device_to_host_copy_per_forward(
    counter: TransferCounter, name: str, shape: tuple[int, ...], cache_size: int, device: str
) -> None:
    torch.manual_seed(9)
    x = torch.randn(shape, device=device, requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), device=device)
    loss = DISTANCE_MAP_LOSSES[name](cache_size=cache_size)
    for step in range(2):  # the second step hits the cache when there is one
        counter.reset()
        value = loss(x, y)
        assert counter.to_host <= 1, f"{name}: {counter.to_host} device-to-host copies in step {step}"
        assert counter.to_device <= 1, f"{name}: {counter.to_device} host-to-device copies in step {step}"
        value.backward()
        assert value.device.type == device and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", ["foreground", "inside_outside"])
@pytest.mark.parametrize("shape", [(3, 3, 21, 18), (2, 2, 11, 9, 7)])
def test_hausdorff_one_copy_gives_the_maps_of_before(dtype: torch.dtype, variant: str, shape: tuple[int, ...]) -> None:
    # bitwise the loss and gradient of the code it replaced: two separate map calls (foreground),
    # MONAI's HausdorffDTLoss on rmseg's probabilities (inside_outside)
    from rmseg.losses._utils import prepare_probabilities_and_onehot
    from rmseg.losses.distance_maps import foreground_distance_map

    torch.manual_seed(10)
    x = (torch.randn(shape) * 3).to(dtype).requires_grad_()
    y = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]))
    y[0] = 0  # a sample without foreground
    for include_background, exponent in ((False, 2.0), (True, 1.5)):
        kwargs = dict(variant=variant, distance_exponent=exponent, include_background=include_background, reduction="none")
        ours = HausdorffDistanceLoss(**kwargs)(x, y)
        probs, onehot = prepare_probabilities_and_onehot(x, y, "softmax", True, include_background)
        if variant == "foreground":
            d_gt = foreground_distance_map(onehot > 0.5).to(probs.dtype)
            d_pred = foreground_distance_map(probs.detach() > 0.5).to(probs.dtype)
            before = ((probs - onehot) ** 2 * (d_gt**exponent + d_pred**exponent)).flatten(1).mean(1)
        else:
            before = HausdorffDTLoss(alpha=exponent, include_background=True, reduction="none")(probs, onehot)
            before = before.flatten(1).mean(1)
        assert ours.dtype == before.dtype and torch.equal(ours, before)
        assert torch.equal(*(torch.autograd.grad(v.sum(), x)[0] for v in (ours, before)))
