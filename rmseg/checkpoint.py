"""The one writer and reader of rmseg checkpoints (training, resume, ``rmseg-eval``, benchmarks).

A checkpoint is a dict tagged ``format: rmseg-checkpoint-1`` with ``config`` (the resolved run config),
``model`` (the uncompiled state dict), ``iteration``, ``train_time_s``, ``optimizer``, ``scheduler``, ``scaler``
and ``rng``. It is written through a temporary file renamed into place (never half-written) and read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only: a crafted file
cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "rmseg-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of ``state`` (tagged with :data:`FORMAT`) through a temporary file renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**state, "format": FORMAT}, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path, fix: str = "train the run again or pass another checkpoint") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; FileNotFoundError / ValueError naming the file
    and ``fix``, what the caller's user can do about it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"checkpoint {path} is corrupt, unreadable or holds more than tensors and plain containers "
            f"({type(err).__name__}): {fix}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or not {"model", "config"} <= set(state):
        raise ValueError(f"{path} is not an rmseg checkpoint (a dict of format {FORMAT} with 'model' and 'config', "
                         f"written by rmseg-train): {fix}")
    return state
