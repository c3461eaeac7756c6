"""Networks: MONAI's 2D U-Net (Table 1), the V-Net of Ma et al. / UA-MT (Table 2) and MONAI's VNet, and their
output heads (:mod:`rmseg.models.heads`).

A model config (``configs/model/*.yaml``) names the network class by ``_target_``, as loss configs do; its
other keys are the class's keyword arguments, except ``name`` (the config's label, which picks its schema
in ``rmseg.config.schema``), ``head`` (how evaluation turns outputs into probabilities) and
``out_channels`` (None: ``data.num_classes``). ``build_model(model_cfg, data_cfg)`` adds ``in_channels``
and ``out_channels`` from ``data``, and checks ``spatial_dims`` against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rmseg.models.heads import HEADS, SDF_K, head_probabilities
from rmseg.models.vnet3d import VNet3D

__all__ = ["HEADS", "MODEL_DIMS", "MODEL_TARGETS", "VNet3D", "build_model", "complete_model_config",
           "head_probabilities", "sdf_steepness"]

#: The networks configs/model/ offers: ``name`` -> class, and each one's dimensionality.
MODEL_TARGETS = {"unet2d": "monai.networks.nets.UNet", "vnet3d": "rmseg.models.VNet3D",
                 "monai_vnet": "monai.networks.nets.VNet"}
MODEL_DIMS = {"unet2d": 2, "vnet3d": 3, "monai_vnet": 3}
#: Keys of a model config that are not keyword arguments of its class.
NOT_ARGUMENTS = ("name", "head", "out_channels")


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    return dict(vars(cfg))


def _sdf_terms(loss_cfg: Any) -> list[dict[str, Any]]:
    """The ``SignedDistanceLoss`` terms of a loss config, read from the config (no loss is built)."""
    terms = (_as_dict(loss_cfg) if loss_cfg else {}).get("terms") or []
    return [t for t in terms if str(t.get("_target_", "")).endswith("SignedDistanceLoss")]


def _is_sdf_loss(loss_cfg: Any) -> bool:
    return bool(_sdf_terms(loss_cfg))


def sdf_steepness(loss_cfg: Any) -> float:
    """``k`` of the ``SignedDistanceLoss`` term of a loss config, else :data:`SDF_K`: the steepness the sdf
    head must share with the loss that trained it."""
    terms = _sdf_terms(loss_cfg)
    return float(terms[0].get("k", SDF_K)) if terms else SDF_K


def complete_model_config(model_cfg: Any, loss_cfg: Any = None) -> dict[str, Any]:
    """``model_cfg`` as a dict with the keys configs written before models were chosen by ``_target_`` lack:
    ``_target_`` and ``spatial_dims`` from ``name``, and ``head`` (``sdf`` when ``loss_cfg`` has a
    ``SignedDistanceLoss`` term, else ``softmax``). A complete config comes back unchanged."""
    model = _as_dict(model_cfg)
    name = model.get("name")
    if name in MODEL_TARGETS:
        model.setdefault("_target_", MODEL_TARGETS[name])
        model.setdefault("spatial_dims", MODEL_DIMS[name])
    model.setdefault("head", "sdf" if _is_sdf_loss(loss_cfg) else "softmax")
    return model


def build_model(model_cfg: Any, data_cfg: Any) -> nn.Module:
    """The network of ``model_cfg._target_`` sized for ``data_cfg`` (in_channels -> out_channels).

    ``out_channels`` defaults to ``data.num_classes``. Raises ValueError for a config without a known
    network, a network/data dimensionality mismatch or an argument the class rejects.
    """
    model = complete_model_config(model_cfg)
    data = _as_dict(data_cfg)
    if "_target_" not in model:
        raise ValueError(f"model.name={model.get('name')!r} is unknown and the model config has no _target_: use "
                         f"one of {sorted(MODEL_TARGETS)} (configs/model/) or give _target_")
    head_probabilities(model["head"])  # an unknown head fails here, before training
    dims = model.get("spatial_dims")
    if data.get("spatial_dims") != dims:
        raise ValueError(
            f"model {model.get('name')!r} is {dims}D but data {data.get('name')!r} has spatial_dims="
            f"{data.get('spatial_dims')}: pick a {data.get('spatial_dims')}D model (model=unet2d for 2D, "
            "model=vnet3d or model=monai_vnet for 3D)"
        )
    out_channels = model.get("out_channels") or data["num_classes"]
    arguments = {k: v for k, v in model.items() if k not in NOT_ARGUMENTS}
    try:
        return instantiate(arguments, in_channels=data["in_channels"], out_channels=out_channels, _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"model config cannot be built: {err}") from err
