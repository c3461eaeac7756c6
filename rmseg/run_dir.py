"""Run folders: ``<runs_dir>/<name>/seed<k>/``, built in ``<runs_dir>/<name>/.seed<k>.tmp/`` and renamed
when the run is complete, so a folder without the dot is always a finished run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    final: Path
    tmp: Path

    @property
    def checkpoint(self) -> Path:
        return self.tmp / "checkpoint.pt"


def run_dir(runs_dir: str | Path, name: str, seed: int) -> RunDir:
    """The folders of run ``name`` / ``seed``. ``name`` is a relative path such as ``table1/rm20``."""
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise ValueError(f"name={name!r} must be a relative path like 'table1/rm20' (no '..', no leading dots)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    parent = Path(runs_dir).joinpath(*parts)
    return RunDir(final=parent / f"seed{seed}", tmp=parent / f".seed{seed}.tmp")


def claim(run: RunDir, *, on_exists: str, resume: bool) -> bool:
    """Decide whether this run should train; create its temporary folder. False: already complete (skip).

    - completed (``run.final`` exists): ``on_exists="skip"`` returns False, ``"fail"`` raises FileExistsError;
    - an interrupted run in ``run.tmp``: continued with ``resume=True``, else FileExistsError;
    - ``resume=True`` with nothing to resume starts from scratch.
    """
    if on_exists not in ("skip", "fail"):
        raise ValueError(f"on_exists={on_exists!r} must be 'skip' or 'fail'")
    if run.final.exists():
        if on_exists == "skip":
            log.info("run %s is complete: skipped (on_exists=skip)", run.final)
            return False
        raise FileExistsError(
            f"run {run.final} is already complete (on_exists=fail): choose another name or seed, or move "
            "that folder away; completed runs are never overwritten"
        )
    if run.tmp.exists() and not resume:
        raise FileExistsError(
            f"an interrupted run is in {run.tmp}: pass resume=true to continue it, or delete that folder to "
            "start over"
        )
    if resume and not run.checkpoint.exists():
        log.info("resume=true but %s holds no checkpoint: starting from iteration 0", run.tmp)
    run.tmp.mkdir(parents=True, exist_ok=True)
    return True


def complete(run: RunDir) -> Path:
    """Rename the temporary folder to the final one (atomic on one file system)."""
    if run.final.exists():
        raise FileExistsError(f"{run.final} appeared while this run was training: left the run in {run.tmp}")
    os.rename(run.tmp, run.final)
    return run.final
