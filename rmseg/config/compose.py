"""Compose the rmseg config outside a command line (tests, ``make demo``, notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from rmseg.config.schema import register

#: ``rmseg/configs``: in a checkout a link to the repository's ``configs/``, in an installed wheel a copy
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def experiment_names(family: str | None = None) -> list[str]:
    """Experiment choices, e.g. ``["table1/mse", ...]`` (``family="table1"``: that folder only)."""
    root = CONFIG_DIR / "experiment"
    folder = root / family if family else root
    if family and not folder.is_dir():
        raise ValueError(f"experiment family {family!r} does not exist: use one of {sorted(p.name for p in root.iterdir())}")
    return sorted(str(p.relative_to(root).with_suffix("")) for p in folder.rglob("*.yaml"))


def compose_config(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """The config ``rmseg-train <overrides>`` would run, e.g. ``["experiment=table1/rm20", "seed=1"]``."""
    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
