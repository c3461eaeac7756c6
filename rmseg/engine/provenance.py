"""What produced a run: git commit and uncommitted diff, package versions, machine, command line."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("rmseg", "torch", "monai", "hydra-core", "omegaconf", "numpy", "scipy", "scikit-image", "pandas",
            "nibabel", "SimpleITK", "h5py", "medpy")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: run records, tables and figures are what runs write, not code: left out of the diff and untracked list
NOT_CODE = (":(exclude)results",)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> dict[str, Any]:
    """``commit`` (None outside a git checkout), ``dirty``, ``diff`` (``git diff HEAD``: staged and
    unstaged changes of tracked files) and ``untracked`` files, of the whole checkout but ``results/``
    (:data:`NOT_CODE`: other runs' records are not what produced this one)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff": None, "untracked": None}
    diff = _git("diff", "HEAD", "--", ".", *NOT_CODE) or ""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "--", ".", *NOT_CODE) or "").split()
    return {"commit": commit.strip(), "dirty": bool(diff or untracked), "diff": diff, "untracked": untracked}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(name)), None)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_has_bf16() -> bool | None:
    """Whether the CPU advertises bfloat16 units (AVX-512-BF16 or AMX-BF16); None where unknown."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_bf16": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return info


def collect() -> dict[str, Any]:
    """Everything above plus the UTC time and the command line."""
    return {
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        **git_state(),
        "packages": package_versions(),
        "machine": machine(),
    }


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file renamed into place (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
