"""Output heads: what turns a network's output ``(B, C, *S)`` into class probabilities ``(B, C, *S)``.

The head is a model setting (``model.head`` in ``configs/model/*.yaml``), read by evaluation; training
losses read the raw output. The argmax of the probabilities is the predicted label map.

- ``softmax`` (default): softmax over the class axis.
- ``sigmoid``: an independent sigmoid per channel (multi-label outputs).
- ``sdf``: the SDF row's head (``rmseg.losses.SignedDistanceLoss``): ``f = tanh(output[:, 1:])`` is the
  predicted normalised signed distance of each foreground class, ``p_c = sigmoid(-k f_c)`` for
  ``c >= 1`` and ``p_0 = 1 - max_c p_c``, so the argmax thresholds ``f`` at 0. ``k`` is the loss's
  steepness (:func:`rmseg.models.sdf_steepness` reads it from a run's loss config; default :data:`SDF_K`).
  ``p_c > 0.5`` iff ``f_c < 0``: background where every ``f_c >= 0``, else a class with ``f_c < 0`` (the
  largest ``p_c`` where several are; saturated ties go to the lowest index). For ``C = 2``,
  ``p_0 + p_1 = 1``; for ``C > 2`` the values are not normalised over classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["HEADS", "SDF_K", "head_probabilities", "sdf_probabilities", "sigmoid_probabilities",
           "softmax_probabilities"]

#: Default steepness of the SDF head's smooth Heaviside, and of ``SignedDistanceLoss``'s ``k`` (Ma et al.'s 1500).
SDF_K = 1500.0


def softmax_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis of ``(B, C, *S)`` logits."""
    return torch.softmax(logits, dim=1)


def sigmoid_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """A sigmoid per channel of ``(B, C, *S)`` logits."""
    return torch.sigmoid(logits)


def sdf_probabilities(output: torch.Tensor, k: float = SDF_K) -> torch.Tensor:
    """``(B, C, *S)`` from a signed-distance output: ``p_c = sigmoid(-k tanh(output_c))`` for ``c >= 1``,
    ``p_0 = 1 - max_c p_c`` (channel 0 of the output is unused)."""
    if output.ndim < 3 or output.shape[1] < 2:
        raise ValueError(f"output shape {tuple(output.shape)} must be (B, C, *S) with C >= 2 for the sdf head")
    fg = torch.sigmoid(-k * torch.tanh(output[:, 1:]))
    return torch.cat([1 - fg.amax(dim=1, keepdim=True), fg], dim=1)


HEADS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": softmax_probabilities, "sigmoid": sigmoid_probabilities, "sdf": sdf_probabilities,
}


def head_probabilities(head: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function of ``model.head`` (None: softmax); ValueError naming the choices for another name."""
    if head is None:
        return softmax_probabilities
    if head not in HEADS:
        raise ValueError(f"model.head={head!r} is unknown: use one of {sorted(HEADS)}")
    return HEADS[head]
