"""Shared fixtures: the optional real-data folder and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """Real data beside the checkout (``../shared/data``) or ``$RMSEG_SHARED_DATA``; None if absent."""
    env = os.environ.get("RMSEG_SHARED_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data; the test is skipped when it is absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found (../shared/data or RMSEG_SHARED_DATA)")
    return root
