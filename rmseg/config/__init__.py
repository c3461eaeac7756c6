"""Hydra configuration: structured schemas and composition helpers."""

from __future__ import annotations

from rmseg.config.compose import CONFIG_DIR, compose_config, experiment_names
from rmseg.config.schema import register

__all__ = ["CONFIG_DIR", "compose_config", "experiment_names", "register"]
