"""Run folders: ``<runs_dir>/<name>/seed<k>/``, built in ``<runs_dir>/<name>/.seed<k>.tmp/`` and renamed
when the run is complete, so a folder without the dot is always a finished run.

A process using a run holds an exclusive OS lock (``fcntl.flock``) on ``<runs_dir>/<name>/.seed<k>.lock``
(:func:`locked`); the lock goes with the process, so a killed run leaves no stale lock. The lock file is
removed when its holder ends with no interrupted run left in ``.seed<k>.tmp/``; a process that locked a
file removed meanwhile notices (another inode at the path) and locks the new one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    final: Path
    tmp: Path

    @property
    def checkpoint(self) -> Path:
        return self.tmp / "checkpoint.pt"

    @property
    def lock(self) -> Path:
        return self.final.with_name(f".{self.final.name}.lock")


class RunInUse(RuntimeError):
    """Another live process holds the run's lock."""


def lock_run(run: RunDir) -> IO[str]:
    """Take the run's exclusive lock, recording ``<pid> <host>`` in the lock file; close the returned file to
    release it. RunInUse (naming the holder's pid) if another process holds it; nothing else is written."""
    run.lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(run.lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _raise_in_use(run, handle)
        try:
            if os.stat(run.lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the file was removed by its last holder: lock the one at the path now
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    handle.flush()
    return handle


@contextmanager
def locked(run: RunDir) -> Iterator[None]:
    """Hold the run's lock (:func:`lock_run`) for the block; then remove the lock file unless an interrupted
    run remains in ``run.tmp``, and release it."""
    handle = lock_run(run)
    try:
        yield
    finally:
        if not run.tmp.exists():
            run.lock.unlink(missing_ok=True)
        handle.close()


def _raise_in_use(run: RunDir, handle: IO[str]) -> None:
    holder = ""
    for _ in range(20):  # the holder writes its pid just after locking
        handle.seek(0)
        holder = handle.read().strip()
        if holder:
            break
        time.sleep(0.05)
    handle.close()
    pid, _, host = holder.partition(" ")
    raise RunInUse(
        f"run {run.final} is in use by process {pid or '<unknown>'}{f' on {host}' if host else ''} (it holds "
        f"{run.lock}): wait for it to finish or stop it (kill {pid or '<pid>'}), then run again; resume=true "
        "continues an interrupted run"
    ) from None


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


@contextmanager
def log_file(path: Path | None) -> Iterator[None]:
    """Log rmseg's INFO messages and everyone's warnings to ``path`` (appending on resume) while inside;
    nothing for ``path`` None (the ranks other than 0)."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger("rmseg").level == logging.NOTSET:
        logging.getLogger("rmseg").setLevel(logging.INFO)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
