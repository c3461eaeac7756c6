"""Networks: the comparison's V-Net layout, MONAI U-Net / VNet through build_model, bad input."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet, VNet
from torch import nn

from rmseg.models import VNet3D, build_model

GS = {"name": "gs", "spatial_dims": 2, "in_channels": 3, "num_classes": 3}
LA = {"name": "la", "spatial_dims": 3, "in_channels": 1, "num_classes": 2}


def _convs(model: nn.Module, cls: type, **attrs) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) is cls and all(getattr(m, k) == v for k, v in attrs.items())]


def test_vnet3d_layout_matches_the_description():
    net = VNet3D(in_channels=1, out_channels=2, base_filters=16, dropout=0.5)
    # stages of 1, 2, 3, 3, 3 convs (encoder) and 3, 3, 2, 1 (decoder): 21 3x3x3 convs
    assert len(_convs(net, nn.Conv3d, kernel_size=(3, 3, 3))) == 1 + 2 + 3 + 3 + 3 + 3 + 3 + 2 + 1
    downs = _convs(net, nn.Conv3d, kernel_size=(2, 2, 2), stride=(2, 2, 2))
    ups = _convs(net, nn.ConvTranspose3d, kernel_size=(2, 2, 2), stride=(2, 2, 2))
    assert [d.out_channels for d in downs] == [32, 64, 128, 256]
    assert [u.out_channels for u in ups] == [128, 64, 32, 16]
    assert len(_convs(net, nn.BatchNorm3d)) == 21 + 4 + 4
    assert len(_convs(net, nn.ReLU)) == 21 + 4 + 4
    assert net.head.kernel_size == (1, 1, 1) and net.head.in_channels == 16 and net.head.out_channels == 2
    dropouts = _convs(net, nn.Dropout3d)
    assert len(dropouts) == 1 and dropouts[0].p == 0.5


def test_vnet3d_forward_shape_gradient_and_dropout_only_in_training():
    torch.manual_seed(0)
    net = VNet3D(in_channels=1, out_channels=2, base_filters=2, dropout=0.5)
    x = torch.randn(2, 1, 16, 32, 16)
    out = net(x)
    assert out.shape == (2, 2, 16, 32, 16)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert not torch.equal(net(x), net(x))  # dropout active in train()
    net.eval()
    assert torch.equal(net(x), net(x))  # and off at test time


def test_vnet3d_skips_are_additive():
    """Zeroing the deepest skip (the encoder's 4th stage output) changes the output only through the add."""
    net = VNet3D(in_channels=1, out_channels=2, base_filters=2, dropout=0.0).eval()
    seen = {}
    net.ups[0].register_forward_hook(lambda m, i, o: seen.setdefault("up", o))
    net.encoder[3].register_forward_hook(lambda m, i, o: seen.setdefault("skip", o))
    net.decoder[0].register_forward_hook(lambda m, i, o: seen.setdefault("dec_in", i[0]))
    net(torch.randn(1, 1, 16, 16, 16))
    torch.testing.assert_close(seen["dec_in"], seen["up"] + seen["skip"])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"base_filters": 0}, "base_filters=0"), ({"dropout": 1.0}, "dropout=1.0"), ({"in_channels": 2.5}, "in_channels")],
)
def test_vnet3d_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VNet3D(**kwargs)


def test_vnet3d_rejects_sizes_not_divisible_by_16():
    with pytest.raises(ValueError, match="divisible by 16"):
        VNet3D(base_filters=2)(torch.zeros(1, 1, 16, 16, 20))


def test_build_model_sizes_each_network_from_the_data_config():
    unet = build_model({"name": "unet2d", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}, GS)
    assert isinstance(unet, UNet)
    assert unet(torch.zeros(2, 3, 32, 48)).shape == (2, 3, 32, 48)
    vnet = build_model({"name": "vnet3d", "base_filters": 2, "dropout": 0.5}, LA).eval()
    assert isinstance(vnet, VNet3D) and vnet(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
    monai_vnet = build_model({"name": "monai_vnet", "out_channels": 4}, LA).eval()
    assert isinstance(monai_vnet, VNet) and monai_vnet(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 4, 16, 16, 16)


def test_build_model_rejects_unknown_names_and_dimension_mismatch():
    with pytest.raises(ValueError, match="model.name='resnet'"):
        build_model({"name": "resnet"}, GS)
    with pytest.raises(ValueError, match="'vnet3d' is 3D but data 'gs' has spatial_dims=2"):
        build_model({"name": "vnet3d"}, GS)
    with pytest.raises(ValueError, match="'unet2d' is 2D but data 'la'"):
        build_model({"name": "unet2d", "channels": [4, 8], "strides": [2]}, LA)
