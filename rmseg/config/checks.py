"""Start-up checks of a composed run config: every bad input fails here, before a run folder exists.

The schema (``rmseg.config.schema``) already refuses misspelt keys and wrong types when Hydra composes;
:func:`check_config` adds what a schema cannot say: keys added with ``+``, value ranges, the RM orders'
length against the data's dimensions, the device, float16 support, and a loss that needs the model's
``sdf`` head.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rmseg.config.schema import MODEL_SCHEMAS, OptimConfig, PathsConfig, ProtocolConfig, RmsegConfig, TrainerConfig
from rmseg.data.config import as_data_config
from rmseg.evaluation.config import eval_config
from rmseg.models import complete_model_config


def _positive(value: Any, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")


def check_rm_orders(loss_cfg: Any, spatial_dims: int, dataset: str) -> None:
    """Every ``orders`` entry of the loss terms has ``spatial_dims`` components (ValueError otherwise)."""
    for i, term in enumerate(loss_cfg.get("terms") or []):
        for order in term.get("orders") or []:
            if len(order) != spatial_dims:
                example = [2] + [0] * (spatial_dims - 1)
                raise ValueError(
                    f"loss.terms[{i}].orders has {list(order)} with {len(order)} entries but data {dataset!r} is "
                    f"{spatial_dims}D: give {spatial_dims} entries per order, e.g. {example}"
                )


def check_known_keys(resolved: Mapping[str, Any]) -> None:
    """Keys added with ``+key=value`` to a node that has a schema fail like a misspelt key (ValueError)."""
    nodes = {"": (resolved, RmsegConfig)}
    nodes.update({f"{name}.": (resolved[name], schema) for name, schema in
                  (("trainer", TrainerConfig), ("optim", OptimConfig), ("paths", PathsConfig), ("protocol", ProtocolConfig))})
    model_schema = MODEL_SCHEMAS.get(resolved["model"].get("name"))
    if model_schema is not None:
        nodes["model."] = (resolved["model"], model_schema)
    for prefix, (node, schema) in nodes.items():
        known = {f.name for f in fields(schema)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]} (added with '+'?): "
                             f"{prefix.rstrip('.') or 'the root'} takes {sorted(known)}")


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """Validate the composed config; return it resolved as plain containers. Raises ValueError."""
    if OmegaConf.is_missing(cfg, "name"):
        raise ValueError("no experiment chosen: pass experiment=table1/<row> or table2/<row> (configs/experiment/), "
                         "or name=<run name> for a run of your own")
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    check_known_keys(resolved)
    trainer, optim = resolved["trainer"], resolved["optim"]
    _positive(trainer["max_iters"], "trainer.max_iters")
    _positive(trainer["checkpoint_every"], "trainer.checkpoint_every")
    _positive(trainer["log_every"], "trainer.log_every")
    for key in ("iters_per_epoch", "num_threads"):
        if trainer[key] is not None:
            _positive(trainer[key], f"trainer.{key}")
    if trainer["device"] not in ("auto", "cpu") and not trainer["device"].startswith("cuda"):
        raise ValueError(f"trainer.device={trainer['device']!r} must be auto, cpu or cuda[:N]")
    fp16 = trainer["amp"] and trainer["amp_dtype"] == "float16"
    if fp16 and not float16_amp_available(pick_device(trainer["device"]).type):
        raise ValueError("trainer.amp_dtype=float16 needs a CUDA device or a PyTorch with float16 autocast and "
                         "GradScaler on CPU (2.3 or later): use amp_dtype=bfloat16 on CPU")
    if optim["name"] != "sgd":
        raise ValueError(f"optim.name={optim['name']!r} is unknown: use sgd")
    for key in ("lr", "momentum", "weight_decay", "lr_gamma"):
        if not math.isfinite(optim[key]) or not optim[key] >= 0 or (key == "lr" and optim[key] == 0):
            raise ValueError(f"optim.{key}={optim[key]!r} must be a finite number {'> 0' if key == 'lr' else '>= 0'}")
    if optim["lr_step_iters"] is not None:
        _positive(optim["lr_step_iters"], "optim.lr_step_iters")
    data = as_data_config(cfg.data)
    data = as_data_config(cfg.data)
    eval_config(cfg.eval)
    check_rm_orders(resolved["loss"], data.spatial_dims, data.name)
    check_head(resolved["model"], resolved["loss"])
    return resolved


def check_head(model_cfg: Mapping[str, Any], loss_cfg: Mapping[str, Any]) -> None:
    """A loss with a ``SignedDistanceLoss`` term trains a signed-distance output, which only the ``sdf`` head
    reads correctly (ValueError otherwise, and for the ``sdf`` head without that loss)."""
    wants = complete_model_config({k: v for k, v in model_cfg.items() if k != "head"}, loss_cfg)["head"]
    head = model_cfg.get("head", "softmax")
    if (wants == "sdf") != (head == "sdf"):
        raise ValueError(f"model.head={head!r} but the loss {'has' if wants == 'sdf' else 'has no'} SignedDistanceLoss "
                         f"term: the output is {'a signed distance' if wants == 'sdf' else 'class scores'}, read by "
                         f"model.head={'sdf' if wants == 'sdf' else 'softmax'}")


def float16_amp_available(device_type: str) -> bool:
    """Whether float16 autocast and a GradScaler run on ``device_type`` (always on CUDA; on CPU from PyTorch 2.3)."""
    if device_type == "cuda":
        return True
    try:
        torch.amp.GradScaler(device_type)
        with warnings.catch_warnings():  # an unsupported dtype only warns and disables autocast
            warnings.simplefilter("ignore")
            with torch.autocast(device_type, dtype=torch.float16):
                probe = torch.nn.functional.linear(torch.ones(1, 1), torch.ones(1, 1))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return False
    return probe.dtype == torch.float16


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but no CUDA device is available: use trainer.device=cpu")
    return device
