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


def test_models_are_chosen_by_target_and_their_head_is_checked():
    """A model config names its class by ``_target_`` (any importable network); ``name`` alone still builds
    the configs/model/ networks (configs written before), an unknown head fails before training."""
    tiny = build_model({"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "features": [2, 2, 2, 2, 2, 2]}, GS)
    assert tiny(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="model.head='logits' is unknown"):
        build_model({"name": "vnet3d", "head": "logits"}, LA)
    with pytest.raises(ValueError, match="cannot be built"):
        build_model({"name": "vnet3d", "base_filter": 2}, LA)


def test_heads_map_outputs_to_class_probabilities():
    from rmseg.losses import SignedDistanceLoss
    from rmseg.models import head_probabilities

    out = torch.randn(2, 3, 8, 8) * 3
    assert torch.allclose(head_probabilities("softmax")(out).sum(1), torch.ones(2, 8, 8))
    assert torch.equal(head_probabilities(None)(out), torch.softmax(out, dim=1))
    assert torch.equal(head_probabilities("sigmoid")(out), torch.sigmoid(out))
    sdf = head_probabilities("sdf")(out)  # the SDF row's head: what its loss trains, thresholded at 0
    fg_prob = torch.sigmoid(-1500.0 * torch.tanh(out[:, 1:]))  # SignedDistanceLoss's h at its default k
    assert SignedDistanceLoss().k == 1500.0
    assert torch.equal(sdf, torch.cat([1 - fg_prob.amax(1, keepdim=True), fg_prob], 1))
    fg = torch.tanh(out[:, 1:]) < 0
    assert torch.equal(sdf.argmax(1) > 0, fg.any(1))
    with pytest.raises(ValueError, match="C >= 2"):
        head_probabilities("sdf")(torch.zeros(1, 1, 4, 4))


def test_configs_written_before_heads_get_the_head_their_loss_implies():
    from rmseg.models import complete_model_config

    sdf_loss = {"_target_": "rmseg.losses.SegmentationLoss", "terms": [{"_target_": "rmseg.losses.SignedDistanceLoss"}]}
    old = {"name": "vnet3d", "base_filters": 16, "dropout": 0.5}
    assert complete_model_config(old, sdf_loss) == {**old, "_target_": "rmseg.models.VNet3D", "spatial_dims": 3,
                                                    "head": "sdf"}
    assert complete_model_config(old, {"terms": []})["head"] == "softmax"
    assert complete_model_config({**old, "head": "softmax"}, sdf_loss)["head"] == "softmax"  # a set head stays


def test_an_sdf_loss_needs_the_sdf_head_and_the_sdf_experiments_set_it():
    from rmseg.config import compose_config
    from rmseg.config.checks import check_config

    for experiment in ("table2/sdf", "extended/gs_sdf", "extended/la_sdf"):
        assert compose_config([f"experiment={experiment}"]).model.head == "sdf"
    with pytest.raises(ValueError, match="model.head='softmax' but the loss has SignedDistanceLoss"):
        check_config(compose_config(["experiment=table2/sdf", "model.head=softmax"]))
    with pytest.raises(ValueError, match="model.head='sdf' but the loss has no SignedDistanceLoss"):
        check_config(compose_config(["experiment=table2/vnet", "model.head=sdf"]))
    with pytest.raises(Exception, match="head"):
        compose_config(["experiment=table2/vnet", "model.head=tanh"])  # the schema refuses another head
