"""The one writer and reader of rmseg checkpoints (training, resume, ``rmseg-eval``, benchmarks).

A checkpoint is a dict tagged ``format: rmseg-checkpoint-1`` with ``config`` (the resolved run config),
``model`` (the uncompiled state dict), ``iteration``, ``train_time_s``, ``optimizer``, ``scheduler``, ``scaler``
and ``rng``. It is written through a temporary file renamed into place (never half-written) and read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only: a crafted file
cannot run code.

Resuming compares the checkpoint's config with the current one (:func:`config_differences`, ignoring
:data:`RESUME_FREE_KEYS`), skipping a completed run compares its ``config.yaml`` (:func:`check_same_run`),
and :func:`rng_states` / :func:`set_rng_states` carry every random generator across, so a resumed run
reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from rmseg.models import complete_model_config

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


#: Keys that may differ between a checkpoint (or a completed run) and the config resuming (or skipping) it:
#: they do not change the weights (the speed switches and thread count only up to float rounding and dropout
#: masks; ``data.root`` / ``data.prepared_dir`` say where the same data lies).
RESUME_FREE_KEYS = ("resume", "on_exists", "paths", "trainer.progress_bar", "trainer.tensorboard",
                    "trainer.log_every", "trainer.num_threads", "trainer.channels_last", "trainer.cudnn_benchmark",
                    "trainer.compile", "data.num_workers", "data.root", "data.prepared_dir")


def rng_states() -> dict[str, Any]:
    """Every random generator's state (Python, NumPy, torch CPU, this process's CUDA device) as tensors and
    plain containers (what ``weights_only`` loading accepts)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else [],  # this process's device only
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore :func:`rng_states`."""
    random.setstate(states["python"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if len(cuda) and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # checkpoints of older rmseg: every visible device's state
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)  # the current device's, however many devices are visible now


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept whole)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _completed(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config with the model keys configs gained since (``rmseg.models.complete_model_config``)."""
    config = dict(config)
    if isinstance(config.get("model"), Mapping):
        config["model"] = complete_model_config(config["model"], config.get("loss"))
    return config


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved -> current`` for every key that differs, ignoring :data:`RESUME_FREE_KEYS`."""
    a, b = flatten(_completed(saved)), flatten(current)
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)  # noqa: E731
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if not free(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]


def check_same_run(final: Path, resolved: Mapping[str, Any]) -> None:
    """A completed run is skipped only if it was made with this config (keys added to rmseg since, absent
    from its ``config.yaml``, do not count); otherwise ValueError naming the differing keys."""
    saved_path = final / "config.yaml"
    if not saved_path.is_file():
        raise ValueError(f"completed run {final} has no config.yaml: it cannot be compared with this config; "
                         "move it away to re-run it")
    saved = OmegaConf.to_container(OmegaConf.load(saved_path))
    present = flatten(_completed(saved))
    diff = [d for d in config_differences(saved, resolved) if d.split(":", 1)[0] in present]
    if diff:
        raise ValueError(f"run {final} is complete but was made with another config: " + "; ".join(diff)
                         + ". Give this run its own folder (name=<new name>, or another seed or paths.runs_dir), "
                         "or move the old one away")


def load_checkpoint(path: Path, resolved_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Read a run's checkpoint to resume it with ``resolved_cfg``; ValueError if unreadable or made with another config."""
    try:
        state = read_checkpoint(path, fix=f"delete {path.parent} to start over")
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    diff = config_differences(state["config"], resolved_cfg)
    if diff:
        raise ValueError(f"cannot resume {path}: the config differs from the checkpoint's in "
                         + "; ".join(diff) + ". Resume with the original values or start a new run (other name/seed)")
    return state
