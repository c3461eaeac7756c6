"""Networks: MONAI's 2D U-Net (Table 1), the V-Net of Ma et al. / UA-MT (Table 2) and MONAI's VNet.

``build_model(model_cfg, data_cfg)`` takes the ``model`` and ``data`` config nodes: ``model.name``
picks the network, ``data`` gives ``spatial_dims``, ``in_channels`` and ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.networks.nets import UNet, VNet
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rmseg.models.vnet3d import VNet3D

__all__ = ["MODEL_DIMS", "VNet3D", "build_model"]

MODEL_DIMS = {"unet2d": 2, "vnet3d": 3, "monai_vnet": 3}


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    return dict(vars(cfg))


def build_model(model_cfg: Any, data_cfg: Any) -> nn.Module:
    """The network named by ``model_cfg.name`` sized for ``data_cfg`` (in_channels -> out_channels).

    ``out_channels`` defaults to ``data.num_classes``; a model config may set it (e.g. a loss with its
    own head). Raises ValueError for an unknown name or a network/data dimensionality mismatch.
    """
    model = _as_dict(model_cfg)
    data = _as_dict(data_cfg)
    name = model.pop("name", None)
    if name not in MODEL_DIMS:
        raise ValueError(f"model.name={name!r} is unknown: use one of {sorted(MODEL_DIMS)}")
    if data.get("spatial_dims") != MODEL_DIMS[name]:
        raise ValueError(
            f"model {name!r} is {MODEL_DIMS[name]}D but data {data.get('name')!r} has spatial_dims="
            f"{data.get('spatial_dims')}: pick a {data.get('spatial_dims')}D model (model=unet2d for 2D, "
            "model=vnet3d or model=monai_vnet for 3D)"
        )
    out_channels = model.pop("out_channels", None) or data["num_classes"]
    in_channels = data["in_channels"]
    if name == "unet2d":
        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **model)
    if name == "vnet3d":
        return VNet3D(in_channels=in_channels, out_channels=out_channels, **model)
    return VNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **model)
