"""Structured configs: the schema every YAML file in ``configs/`` extends.

Registered in Hydra's ConfigStore by :func:`register`, so a misspelt key or a wrong type fails when the
config is composed (before any run folder exists) with the key named, e.g.
``Key 'max_iter' not in 'TrainerConfig'`` or ``Value 'ten' of type 'str' could not be converted to Integer``.
``data`` is checked by ``rmseg.data.config`` and ``eval`` by ``rmseg.evaluation.EvalConfig``; ``model``
names its network by ``_target_`` (``rmseg.models``) and ``loss`` is
an instantiable ``_target_`` node whose keyword arguments the loss classes check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class OnExists(str, Enum):
    """What to do when the run folder of a completed run already exists."""

    skip = "skip"
    fail = "fail"


class AmpDtype(str, Enum):
    bfloat16 = "bfloat16"
    float16 = "float16"


class Head(str, Enum):
    """``model.head``: how evaluation turns the network output into class probabilities (``rmseg.models.heads``)."""

    softmax = "softmax"
    sigmoid = "sigmoid"
    sdf = "sdf"


@dataclass
class ModelConfig:
    """What every model config has: ``_target_`` (the network class, built by ``rmseg.models.build_model``),
    ``name`` (its label in configs/model/), ``spatial_dims`` (checked against the data), ``head`` (network
    output -> probabilities at evaluation: softmax, sigmoid or sdf, ``rmseg.models.heads``) and
    ``out_channels`` (None = data.num_classes)."""

    _target_: str = MISSING
    name: str = MISSING
    spatial_dims: int = MISSING
    head: Head = Head.softmax
    out_channels: Optional[int] = None


@dataclass
class UNet2dConfig(ModelConfig):
    """MONAI ``UNet`` (2D); the other keys are its keyword arguments."""

    _target_: str = "monai.networks.nets.UNet"
    name: str = "unet2d"
    spatial_dims: int = 2
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = 0
    norm: str = "batch"
    act: str = "relu"
    dropout: float = 0.0


@dataclass
class VNet3dConfig(ModelConfig):
    """``rmseg.models.VNet3D`` (Ma et al. / UA-MT V-Net): 16 base filters, Dropout3d 0.5."""

    _target_: str = "rmseg.models.VNet3D"
    name: str = "vnet3d"
    spatial_dims: int = 3
    base_filters: int = 16
    dropout: float = 0.5


@dataclass
class MonaiVNetConfig(ModelConfig):
    """MONAI ``VNet`` (Milletari et al.), offered beside the comparison's V-Net; the other keys are its
    keyword arguments: a dropout probability for the down path, a pair for the up path."""

    _target_: str = "monai.networks.nets.VNet"
    name: str = "monai_vnet"
    spatial_dims: int = 3
    dropout_prob_down: float = 0.5
    dropout_prob_up: list[float] = field(default_factory=lambda: [0.5, 0.5])


@dataclass
class OptimConfig:
    """SGD with an optional step decay of the learning rate every ``lr_step_iters`` iterations."""

    name: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    lr_step_iters: Optional[int] = None
    lr_gamma: float = 0.1


@dataclass
class TrainerConfig:
    """Iteration-based training.

    ``iters_per_epoch`` None = ceil(training cases / batch size): the epoch handed to loss schedules.
    ``amp``: autocast in ``amp_dtype`` (bfloat16, or float16 with a gradient scaler; both on CPU and GPU).
    ``num_threads``: CPU threads of this process (``torch.set_num_threads``); None leaves PyTorch's default.
    ``channels_last``: model and input batches in channels-last memory format (``channels_last_3d`` for 3D).
    ``cudnn_benchmark``: cuDNN autotuning (CUDA only); GPU runs are then not bitwise repeatable.
    ``compile``: ``torch.compile`` of the network for the training forward pass; checkpoints stay uncompiled.
    The last three change speed, not the computation (up to rounding and dropout masks: docs/training.md), so a
    run may resume with other values of them.
    """

    max_iters: int = 2000
    checkpoint_every: int = 250
    log_every: int = 10
    iters_per_epoch: Optional[int] = None
    amp: bool = False
    amp_dtype: AmpDtype = AmpDtype.bfloat16
    device: str = "auto"
    num_threads: Optional[int] = None
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    progress_bar: bool = True
    tensorboard: bool = True


@dataclass
class PathsConfig:
    """Where results go; relative paths are taken from the directory the command runs in."""

    results_dir: str = "results"
    runs_dir: str = "${paths.results_dir}/runs"
    data_dir: str = "data"


@dataclass
class ProtocolConfig:
    """Which protocol the run follows (``configs/protocol/<name>.yaml``); its settings are in the other groups."""

    name: str = "paper"


@dataclass
class RmsegConfig:
    """The root config: one training run (``name`` / ``seed``) plus its groups."""

    name: str = MISSING
    seed: int = 0
    resume: bool = False
    on_exists: OnExists = OnExists.skip
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    eval: Any = MISSING
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)


MODEL_SCHEMAS = {"unet2d": UNet2dConfig, "vnet3d": VNet3dConfig, "monai_vnet": MonaiVNetConfig}


def register() -> None:
    """Store the schemas as root-level configs: ``rmseg_schema`` (the root), ``model_<name>_schema``,
    ``data_<name>_schema`` and ``eval_schema``. A group file extends its schema with
    ``- /data_gs_schema@_here_`` in its defaults. Outside any group, a schema is no option of one: neither
    ``--help`` nor tab completion lists it, and ``data=gs_schema`` is refused."""
    from rmseg.data.config import DrishtiConfig, LAConfig
    from rmseg.evaluation import EvalConfig

    nodes = {"rmseg_schema": RmsegConfig, "data_gs_schema": DrishtiConfig, "data_la_schema": LAConfig,
             "eval_schema": EvalConfig, **{f"model_{name}_schema": node for name, node in MODEL_SCHEMAS.items()}}
    cs = ConfigStore.instance()
    for name, node in nodes.items():
        cs.store(name=name, node=node)
