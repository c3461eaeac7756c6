"""Getting the real data: download (when the network allows), verify, prepare.

Sources are pinned commits of public GitHub repositories:

- LA 2018: UA-MT's preprocessed h5 files and lists (yulequan/UA-MT, ``data/``). The files of the
  paper's 16/20 protocol are verified against the SHA-256 values in :mod:`rmseg.data.checksums`.
- Drishti-GS1: a mirror of the official release (subhamshome/optic-disc-segmentation-drishtigs,
  ``data/{Training,Test}``; the official site needs a form). No reference checksums exist for it:
  the pinned commit fixes the content and preparation records every file's SHA-256 in dataset.json.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rmseg.data import drishti, la
from rmseg.data.checksums import LA2018_SHA256
from rmseg.data.prepared import sha256

TIMEOUT_S = 30


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    inner: str  # folder inside the archive that becomes <data_root>/<name>/<target>
    target: str


SOURCES = {
    "la2018": Source(
        "la2018",
        "https://github.com/yulequan/UA-MT/archive/88ed29ad794f877122e542a7fa9505a76fa83515.zip",
        "UA-MT-88ed29ad794f877122e542a7fa9505a76fa83515/data",
        ".",
    ),
    "drishti-gs1": Source(
        "drishti-gs1",
        "https://github.com/subhamshome/optic-disc-segmentation-drishtigs/archive/76bdc442bbc530e6ad42d27600652b1e6bf9d80a.zip",
        "optic-disc-segmentation-drishtigs-76bdc442bbc530e6ad42d27600652b1e6bf9d80a/data",
        "Drishti-GS1_files",
    ),
}


class NoNetworkError(ConnectionError):
    """The download source cannot be reached."""


def is_present(name: str, root: Path) -> bool:
    if name == "la2018":
        return la.is_h5_layout(root)
    try:
        drishti.find_release(root)
    except FileNotFoundError:
        return False
    return True


def fetch(source: Source, data_root: Path) -> Path:
    """Download and unpack ``source`` into ``<data_root>/<name>`` (temporary names until complete)."""
    target_root = data_root / source.name
    downloads = data_root / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{source.name}.zip"
    if not archive.is_file():
        part = archive.with_suffix(".zip.part")
        try:
            with urllib.request.urlopen(source.url, timeout=TIMEOUT_S) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            part.unlink(missing_ok=True)
            raise NoNetworkError(f"cannot download {source.url} ({getattr(error, 'reason', error)})") from error
        part.rename(archive)
    tmp = data_root / f".{source.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith(source.inner + "/")]
            if not members:
                raise ValueError(f"{archive} has no folder {source.inner}: delete the archive and run again")
            zf.extractall(tmp, members)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{archive} is not a valid zip archive ({error}): delete it and run again") from error
    destination = tmp / "out" / source.target
    destination.parent.mkdir(parents=True, exist_ok=True)
    (tmp / source.inner).rename(destination)
    if target_root.exists():
        raise FileExistsError(f"{target_root} exists but is incomplete: move it away and run again")
    (tmp / "out").rename(target_root)
    shutil.rmtree(tmp)
    return target_root


def verify_la(root: Path) -> int:
    """Check the pinned SHA-256 of the protocol's files; returns how many were verified."""
    for relative, expected in LA2018_SHA256.items():
        path = root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the paper's protocol needs it; download the data again")
        if sha256(path) != expected:
            raise ValueError(
                f"{path} has SHA-256 {sha256(path)}, expected {expected}: the file is damaged; delete {root} and "
                f"{root.parent / '.downloads' / (root.name + '.zip')} (the cached archive, if there), then download again"
            )
    return len(LA2018_SHA256)


NO_NETWORK_HELP = (
    "no network: {error}. Put the data in a folder yourself (drishti-gs1/Drishti-GS1_files/..., "
    "la2018/train.list ...) and point rmseg at it with RMSEG_DATA_ROOT=<that folder> or data.root=<dataset folder>."
)
