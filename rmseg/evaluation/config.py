"""The ``eval`` config group's schema (``configs/eval/default.yaml``) and its checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

SAVE_CHOICES = ("none", "some", "all")


@dataclass
class EvalConfig:
    """Schema of the ``eval`` config group (``configs/eval/default.yaml``).

    ``roi_size``/``strides`` drive 3D sliding-window inference (ignored in 2D, where images are
    predicted whole). ``save_predictions``: ``none``, ``some`` (the first ``num_saved`` test ids in
    sorted order: what ``make figures`` draws) or ``all``. ``amp`` (autocast: bfloat16 on CPU, float16 on
    CUDA) and ``channels_last`` (the model and its inputs in channels-last memory format) change how the
    forward pass runs, not what it computes, up to rounding (``benchmarks/inference.py`` times them).
    """

    roi_size: list[int] = field(default_factory=lambda: [112, 112, 80])
    strides: list[int] = field(default_factory=lambda: [18, 18, 4])
    sw_batch_size: int = 4
    blend_mode: str = "constant"
    amp: bool = False
    channels_last: bool = False
    convention: str = "medpy"
    workers: int = 1
    save_predictions: str = "some"
    num_saved: int = 4


def eval_config(cfg: EvalConfig | Mapping | DictConfig | None = None) -> EvalConfig:
    """Validated :class:`EvalConfig` from a dataclass, dict or DictConfig (None: the defaults)."""
    if cfg is None:
        return EvalConfig()
    if isinstance(cfg, EvalConfig):
        out = cfg
    else:
        merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg)
        out = OmegaConf.to_object(merged)
    if len(out.roi_size) != len(out.strides):
        raise ValueError(
            f"eval.roi_size {list(out.roi_size)} and eval.strides {list(out.strides)} must have one entry per axis"
        )
    for r, s in zip(out.roi_size, out.strides):
        if r < 1 or s < 1 or s > r:
            raise ValueError(
                f"eval.strides {list(out.strides)} must be in [1, roi_size] per axis (roi_size {list(out.roi_size)})"
            )
    if out.sw_batch_size < 1:
        raise ValueError(f"eval.sw_batch_size must be >= 1, got {out.sw_batch_size}")
    if out.workers < 1:
        raise ValueError(f"eval.workers must be >= 1, got {out.workers}")
    if out.save_predictions not in SAVE_CHOICES:
        raise ValueError(f"eval.save_predictions must be one of {SAVE_CHOICES}, got {out.save_predictions!r}")
    if out.num_saved < 0:
        raise ValueError(f"eval.num_saved must be >= 0, got {out.num_saved}")
    return out
