"""Distance maps against hand-worked 1D cases and scipy's exact EDT computed directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries

from rmseg.losses import distance_maps
from rmseg.losses.distance_maps import (
    MapCache,
    foreground_distance_map,
    maps_to_device,
    masks_to_host,
    normalized_signed_distance_map,
    rectified_region_map,
    signed_distance_map,
    two_sided_distance_map,
)

from conftest import tol

F32 = tol(torch.float32)  # a float32 map against scipy's float64: a few roundings, no sum
MAPS = (
    foreground_distance_map,
    two_sided_distance_map,
    signed_distance_map,
    normalized_signed_distance_map,
    rectified_region_map,
)

# 1D mask [0, 0, 1, 1, 1, 0]: d_in = [0, 0, 1, 2, 1, 0], d_out = [2, 1, 0, 0, 0, 1].
MASK_1D = np.array([[[0, 0, 1, 1, 1, 0]]], dtype=bool)


def _backends() -> list[str]:
    try:
        import edt  # noqa: F401
    except ImportError:
        return ["scipy"]
    return ["scipy", "edt"]


@pytest.mark.parametrize("backend", _backends())
def test_hand_worked_1d(backend: str) -> None:
    np.testing.assert_array_equal(foreground_distance_map(MASK_1D, backend)[0, 0], [0, 0, 1, 2, 1, 0])
    # d_in + d_out
    np.testing.assert_array_equal(two_sided_distance_map(MASK_1D, backend)[0, 0], [2, 1, 1, 2, 1, 1])
    # d_out - d_in, inner boundary (d_in == 1) set to 0
    np.testing.assert_array_equal(signed_distance_map(MASK_1D, backend)[0, 0], [2, 1, 0, -2, 0, 1])
    # d_out / 2 - d_in / 2, inner boundary 0
    np.testing.assert_allclose(normalized_signed_distance_map(MASK_1D, backend)[0, 0], [1, 0.5, 0, -1, 0, 0.5])
    # -d_in / max d_in inside, +1 outside
    np.testing.assert_allclose(rectified_region_map(MASK_1D, backend)[0, 0], [1, 1, -0.5, -1, -0.5, 1])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("shape", [(2, 3, 23, 17), (2, 2, 13, 11, 7)])
def test_against_scipy_exact_edt(backend: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    masks = rng.random(shape) > 0.55
    fg = foreground_distance_map(masks, backend)
    two = two_sided_distance_map(masks, backend)
    sdf = signed_distance_map(masks, backend)
    nsdf = normalized_signed_distance_map(masks, backend)
    rrw = rectified_region_map(masks, backend)
    for b in range(shape[0]):
        for c in range(shape[1]):
            m = masks[b, c]
            d_in, d_out = distance_transform_edt(m), distance_transform_edt(~m)
            inner = find_boundaries(m, mode="inner") & m
            # float32 maps: the square root of an exact integer, rounded once or twice (tol with ops=8 covers it)
            np.testing.assert_allclose(fg[b, c], d_in, rtol=F32)
            np.testing.assert_allclose(two[b, c], d_in + d_out, rtol=F32)
            expected = d_out - d_in
            expected[inner] = 0
            np.testing.assert_allclose(sdf[b, c], expected, rtol=F32)
            expected = d_out / d_out.max() - d_in / d_in.max()
            expected[inner] = 0
            np.testing.assert_allclose(nsdf[b, c], expected, rtol=F32, atol=F32)  # a difference of two terms <= 1
            np.testing.assert_allclose(rrw[b, c], np.where(m, -d_in / d_in.max(), 1.0), rtol=F32)


def test_backends_agree() -> None:
    pytest.importorskip("edt")
    masks = np.random.default_rng(0).random((1, 2, 31, 29, 9)) > 0.7
    for fn in MAPS:
        np.testing.assert_allclose(fn(masks, "edt"), fn(masks, "scipy"), rtol=F32, atol=F32)


def test_empty_and_full_slices_are_defined_and_finite() -> None:
    masks = np.zeros((2, 2, 6, 5), dtype=bool)
    masks[1] = True  # sample 1: every class fills the patch; sample 0: every class absent
    for fn in MAPS:
        out = fn(masks)
        assert np.isfinite(out).all(), fn.__name__
    assert (foreground_distance_map(masks) == 0).all()
    assert (two_sided_distance_map(masks) == 0).all()
    assert (signed_distance_map(masks) == 0).all()
    nsdf = normalized_signed_distance_map(masks)
    assert (nsdf[0] == 1).all() and (nsdf[1] == -1).all()
    rrw = rectified_region_map(masks)
    assert (rrw[0] == 1).all() and (rrw[1] == -1).all()


def test_torch_in_torch_out() -> None:
    masks = torch.from_numpy(MASK_1D.astype(np.float32))
    out = signed_distance_map(masks)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == masks.device
    assert out[0, 0].tolist() == [2, 1, 0, -2, 0, 1]
    assert isinstance(signed_distance_map(MASK_1D), np.ndarray)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="binary"):
        signed_distance_map(np.array([[[0, 2, 1]]]))
    with pytest.raises(ValueError, match=r"\(B, C, \*S\)"):
        signed_distance_map(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="backend"):
        signed_distance_map(MASK_1D, backend="cupy")


@pytest.mark.realdata
def test_real_la_patch_against_scipy(shared_data) -> None:
    from rmseg.data.la import read_h5, split_cases

    case = split_cases(shared_data / "la2018", "train")[0]
    _, label = read_h5(case["path"])
    centre = [int(np.mean(ax)) for ax in np.nonzero(label)]
    start = [min(max(c - s // 2, 0), n - s) for c, s, n in zip(centre, (112, 112, 80), label.shape)]
    patch = label[tuple(slice(a, a + s) for a, s in zip(start, (112, 112, 80)))] > 0
    masks = patch[None, None]
    d_in, d_out = distance_transform_edt(patch), distance_transform_edt(~patch)
    expected = d_out - d_in
    expected[d_in == 1] = 0
    for backend in _backends():
        np.testing.assert_allclose(signed_distance_map(masks, backend)[0, 0], expected, rtol=F32)


def test_map_cache_reuses_exact_masks_only() -> None:
    from rmseg.losses.distance_maps import MapCache, map_cache

    rng = np.random.default_rng(3)
    masks = rng.random((2, 2, 12, 10)) > 0.5
    cache = MapCache(max_items=4)
    first = signed_distance_map(masks, cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 4)
    again = signed_distance_map(masks, cache=cache)
    np.testing.assert_array_equal(again, first)
    assert cache.hits == 4
    # another map kind of the same masks is not served from the signed maps
    np.testing.assert_array_equal(foreground_distance_map(masks, cache=cache), foreground_distance_map(masks))
    assert cache.hits == 4 and len(cache) == 4  # least recently used evicted
    changed = masks.copy()
    changed[0, 0, 5, 5] = ~changed[0, 0, 5, 5]
    np.testing.assert_array_equal(signed_distance_map(changed, cache=cache), signed_distance_map(changed))
    assert map_cache(0) is None
    with pytest.raises(ValueError, match="cache_size"):
        map_cache(-1)
    with pytest.raises(ValueError, match="max_items"):
        MapCache(0)


# ---------------------------------------------------------------- one transfer per step
@pytest.mark.parametrize("shape", [(2, 3, 23, 17), (2, 2, 13, 11, 7)])
def test_two_sided_map_is_monais_distance_field_bitwise(shape: tuple[int, ...]) -> None:
    # the inside_outside Hausdorff loss replaced MONAI's per-slice copies by this map: same values
    from monai.losses import HausdorffDTLoss

    rng = np.random.default_rng(sum(shape))
    masks = rng.random(shape) > 0.55
    masks[0, 0], masks[1, -1] = False, True  # slices without a boundary
    ours = two_sided_distance_map(masks)
    assert ours.dtype == np.float64
    field = HausdorffDTLoss().distance_field
    for dtype in (torch.float64, torch.float32):
        theirs = torch.cat([field(torch.from_numpy(masks[:, [c]]).to(dtype)) for c in range(shape[1])], 1)
        assert torch.equal(torch.from_numpy(ours).to(dtype), theirs), dtype


def test_masks_to_host_is_one_copy_and_exact(monkeypatch) -> None:
    calls = []
    to_host = distance_maps._to_host
    monkeypatch.setattr(distance_maps, "_to_host", lambda t: calls.append(t.dtype) or to_host(t))
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 8):
        masks = [torch.from_numpy(rng.random((2, 3, 7, 5)) > 0.5) for _ in range(n)]
        calls.clear()
        host = masks_to_host(*masks)
        assert len(calls) == 1 and len(host) == n
        for m, h in zip(masks, host):
            assert h.dtype == bool
            np.testing.assert_array_equal(h, m.numpy())
    with pytest.raises(ValueError, match="bool"):
        masks_to_host(torch.ones(1, 1, 3))
    with pytest.raises(ValueError, match="shape"):
        masks_to_host(torch.ones(1, 1, 3, dtype=torch.bool), torch.ones(1, 1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="1 to 8"):
        masks_to_host(*[torch.ones(1, 1, 3, dtype=torch.bool)] * 9)


def test_maps_to_device_and_map_functions_copy_once(monkeypatch) -> None:
    maps = [np.arange(6, dtype=np.float32).reshape(1, 1, 6) * k for k in (1, 2)]
    a, b = maps_to_device(maps, "cpu")
    assert a.tolist() == maps[0].tolist() and b.tolist() == maps[1].tolist()
    calls = []
    to_host = distance_maps._to_host
    monkeypatch.setattr(distance_maps, "_to_host", lambda t: calls.append(1) or to_host(t))
    masks = torch.from_numpy(np.random.default_rng(5).random((2, 3, 9, 8)) > 0.5)
    for fn in MAPS:
        calls.clear()
        fn(masks, cache=MapCache(8))
        assert len(calls) == 1, fn.__name__


def test_map_cache_keeps_float64_maps_exact() -> None:
    masks = np.random.default_rng(6).random((2, 2, 15, 13)) > 0.5
    cache = MapCache(max_items=8)
    plain = two_sided_distance_map(masks)
    for _ in range(2):
        cached = two_sided_distance_map(masks, cache=cache)
        assert cached.dtype == np.float64 and np.array_equal(cached, plain)
    assert cache.hits == 4
    # the same map kind in float32 is stored apart, not served from the float64 entries
    np.testing.assert_array_equal(two_sided_distance_map(masks, cache=cache, dtype=np.float32), plain.astype(np.float32))
    assert cache.hits == 4
