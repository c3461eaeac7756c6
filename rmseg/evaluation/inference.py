"""Inference on test cases: whole image (2D) or sliding window (3D), network output -> probabilities -> label map.

2D cases are predicted whole. 3D cases use MONAI's ``sliding_window_inference`` with the strides of the
comparison the paper follows (UA-MT / Ma et al.: 18 voxels in-plane, 4 in depth on a 112x112x80 window),
probabilities averaged over overlapping windows, then argmax. MONAI takes the step as a per-axis
``overlap``; :func:`sliding_window_overlap` converts strides into overlaps that MONAI turns back into
exactly those strides (its window starts then equal UA-MT's ``min(stride * i, size - roi)``).

The output head (``model.head``: softmax, sigmoid or the SDF row's tanh) maps network outputs to class
probabilities (``rmseg.models.heads``); evaluation builds no training loss.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from rmseg.data.resample import downsample_image, upsample_probabilities
from rmseg.engine.speed import in_format, memory_format
from rmseg.evaluation.config import EvalConfig, eval_config
from rmseg.evaluation.per_case import evaluate_predictions
from rmseg.evaluation.predictions import ids_to_save, save_prediction
from rmseg.models import complete_model_config, sdf_steepness
from rmseg.models.heads import head_probabilities, sdf_probabilities, softmax_probabilities

def head_of(model_cfg: Any, loss_cfg: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Network output -> probabilities of a run's ``model`` config (``model.head``). A config written before
    the head was a model setting has none: ``loss_cfg`` then tells (``sdf`` for a SignedDistanceLoss term,
    read from the config only: no loss is built). The sdf head takes the loss's steepness ``k``."""
    head = complete_model_config(model_cfg, loss_cfg)["head"]
    if head == "sdf":
        return functools.partial(sdf_probabilities, k=sdf_steepness(loss_cfg))
    return head_probabilities(head)


def sliding_window_overlap(roi_size: Sequence[int], strides: Sequence[int]) -> tuple[float, ...]:
    """Per-axis MONAI ``overlap`` giving exactly ``strides``.

    MONAI steps by ``int(roi * (1 - overlap))``; ``overlap = 1 - (stride + 0.5) / roi`` lands in the
    middle of the interval that floors to ``stride``, so rounding error cannot change the step.
    """
    if len(roi_size) != len(strides):
        raise ValueError(f"roi_size {list(roi_size)} and strides {list(strides)} differ in length")
    return tuple(1.0 - (s + 0.5) / r for r, s in zip(roi_size, strides))


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    eval_cfg: EvalConfig,
    probabilities_fn: Callable[[torch.Tensor], torch.Tensor] = softmax_probabilities,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class probabilities ``(C, *S)`` (float32, on CPU) of one ``(C_in, *S)`` image.

    2D: one forward pass on the whole image. 3D: sliding window with ``eval_cfg`` roi/strides,
    probabilities (not logits) averaged where windows overlap. With ``eval_cfg.channels_last`` the model is
    put in channels-last memory format (in place).
    """
    from monai.inferers import sliding_window_inference

    x = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image, dtype=torch.float32)
    x = x.unsqueeze(0).to(device)
    spatial_dims = x.ndim - 2
    device_type = torch.device(device).type
    fmt = memory_format(spatial_dims, eval_cfg.channels_last, "eval.channels_last")
    in_format(model, fmt).eval()

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device_type, enabled=eval_cfg.amp):
            logits = model(in_format(batch, fmt))
        return probabilities_fn(logits.float())

    if spatial_dims == 2:
        probs = predictor(x)
    elif spatial_dims == 3:
        if len(eval_cfg.roi_size) != 3:
            raise ValueError(f"eval.roi_size {list(eval_cfg.roi_size)} needs 3 entries for a 3D image")
        probs = sliding_window_inference(
            x,
            roi_size=list(eval_cfg.roi_size),
            sw_batch_size=eval_cfg.sw_batch_size,
            predictor=predictor,
            overlap=sliding_window_overlap(eval_cfg.roi_size, eval_cfg.strides),
            mode=eval_cfg.blend_mode,
        )
    else:
        raise ValueError(f"image must be (C_in, H, W) or (C_in, H, W, D), got shape {tuple(x.shape[1:])}")
    return probs[0].float().cpu()


def evaluate_model(
    model: torch.nn.Module,
    cases: Sequence[Mapping],
    *,
    data_cfg: Mapping | DictConfig,
    eval_cfg: EvalConfig | Mapping | DictConfig | None = None,
    probabilities_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    predictions_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Predict every test case and return per-case, per-structure metric rows.

    ``cases``: ``rmseg.data.load_test_cases`` items (id, image ``(C_in, *S)``, label ``(*S)``,
    spacing, optional ``downsample`` factors: predicted on that coarser grid, probabilities resampled
    back and scored on the label's grid). ``probabilities_fn``: the model's head (:func:`head_of`; default softmax). Label maps are
    written to ``predictions_dir`` (PNG in 2D, NIfTI in 3D) as ``eval_cfg.save_predictions`` asks.
    """
    eval_cfg = eval_config(eval_cfg)
    probabilities_fn = probabilities_fn or softmax_probabilities
    to_save = set(ids_to_save([str(c["id"]) for c in cases], eval_cfg))
    if to_save and predictions_dir is None:
        raise ValueError(
            f"eval.save_predictions={eval_cfg.save_predictions!r} needs predictions_dir (or set it to 'none')"
        )
    predictions = {}
    for case in cases:
        factors = tuple(case.get("downsample") or (1,) * np.asarray(case["label"]).ndim)
        image = downsample_image(np.asarray(case["image"]), factors)
        probs = predict_probabilities(
            model, image, eval_cfg=eval_cfg, probabilities_fn=probabilities_fn, device=device
        )
        probs = upsample_probabilities(probs, factors, np.asarray(case["label"]).shape)
        label_map = probs.argmax(0).numpy().astype(np.uint8)
        predictions[str(case["id"])] = label_map
        if str(case["id"]) in to_save:
            save_prediction(predictions_dir, str(case["id"]), label_map, case.get("spacing"))
    return evaluate_predictions(predictions, cases, structures=data_cfg["structures"], eval_cfg=eval_cfg)
