"""Prepared-dataset folders: written into a temporary sibling, renamed when complete, never overwritten.

The temporary sibling is ``.<name>.tmp-<host>-<pid>``; one left by a killed process of this host is removed
the next time the same folder is prepared.

``<prepared_dir>/dataset.json`` marks a complete preparation and records its parameters. Preparing
again with the same parameters is a no-op; with other parameters it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

MANIFEST = "dataset.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {prepared_dir} is not a complete prepared dataset; prepare it first "
            "(scripts/prepare_drishti.py or scripts/prepare_la.py, or build_train_dataset does it on first use)"
        )
    return json.loads(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(prepared_dir: Path) -> list[Path]:
    """Remove the temporary siblings of ``prepared_dir`` left by dead processes of this host (also the older
    ``.tmp-<pid>`` form); return them."""
    host, removed = socket.gethostname(), []
    for tmp in prepared_dir.parent.glob(f".{glob_escape(prepared_dir.name)}.tmp-*"):
        owner = tmp.name[len(f".{prepared_dir.name}.tmp-"):]
        tmp_host, _, pid = owner.rpartition("-")
        if pid.isdigit() and tmp_host in ("", host) and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def prepare_once(
    prepared_dir: Path | str,
    parameters: dict[str, Any],
    write: Callable[[Path], dict[str, Any]],
) -> tuple[Path, bool]:
    """Run ``write(tmp_dir) -> manifest`` unless ``prepared_dir`` already holds these ``parameters``.

    Returns ``(prepared_dir, written)``. The manifest returned by ``write`` gets ``parameters`` added and
    is saved as ``dataset.json`` before the temporary folder is renamed to ``prepared_dir``.
    """
    prepared_dir = Path(prepared_dir)
    parameters = json.loads(json.dumps(parameters))  # tuples -> lists, as they are stored
    manifest_path = prepared_dir / MANIFEST
    if prepared_dir.parent.is_dir():
        remove_stale_tmp(prepared_dir)
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text()).get("parameters")
        if existing == parameters:
            return prepared_dir, False
        existing = existing or {}
        differ = sorted(k for k in set(existing) | set(parameters) if existing.get(k) != parameters.get(k))
        raise FileExistsError(
            f"{prepared_dir} was prepared with other parameters ({', '.join(differ)} differ): refusing to "
            f"overwrite it. Write elsewhere with data.prepared_dir=<new folder> (or --out <new folder>), "
            f"or delete {prepared_dir} yourself."
        )
    if prepared_dir.exists():
        raise FileExistsError(
            f"{prepared_dir} exists but has no {MANIFEST} (not a prepared dataset): refusing to overwrite it. "
            "Choose another data.prepared_dir (or --out) or remove that folder."
        )
    prepared_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = prepared_dir.parent / f".{prepared_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = write(tmp)
        manifest["parameters"] = parameters
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.rename(tmp, prepared_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("parameters") == parameters:
            return prepared_dir, False  # prepared concurrently by another process with the same parameters
        raise
    return prepared_dir, True
