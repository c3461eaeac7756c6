"""The GPU bundle (``make gpu-bundle``): what a CUDA machine without network needs for rmseg's GPU check.

    python -m benchmarks.gpu.bundle --data ../shared/data --out build/gpu [--limit-mib 60] [--no-wheels]

The device machine runs Python 3.12 with PyTorch but without MONAI, Hydra and a few others, can download
nothing, and receives the working tree plus carried folders, 64 MiB in all. ``--out`` (an ignored folder,
carried by the call) gets, within the smaller of ``--limit-mib`` and what the working tree leaves of 64 MiB:

- ``wheels/``: the packages the GPU image lacks (:data:`PACKAGES`), at the versions installed here, for
  CPython 3.12 manylinux x86-64. rmseg itself is the working tree, which travels with every call.
- ``data/drishti-gs1/``: Drishti-GS1 in the release layout at 512x512 (images area-averaged as rmseg prepares
  them, stored as lossless WebP; soft maps nearest neighbour, PNG). Preparing it at 512x512 gives exactly the
  files that preparing the full release gives.
- ``data/la2018/``: UA-MT's LA cases, recoded losslessly (a volume holds at most a few hundred distinct
  intensities: uint8 indices into them, differenced along H and bz2-compressed; about half of the gzip h5
  size): the 16 training cases and as many ``test.list`` cases, in order, as fit.
- ``MANIFEST.json``: versions, case lists, sizes and the SHA-256 of every file.

:func:`unpack` writes the data back as a release (PNG images, float32 h5 volumes) under one folder that
rmseg reads with ``RMSEG_DATA_ROOT`` (or ``data.root``). Building again from the same data reuses the data
already written while it fits the limit (delete ``--out`` to fill a larger one).
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from rmseg.data import drishti, la
from rmseg.data.prepared import sha256

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
BUNDLE_LIMIT = 60 * MIB
TRAVEL_LIMIT = 64 * MIB  # one device call carries the working tree and the carried folders, at most this
TRAVEL_MARGIN = 1 * MIB  # room for the tree to grow between building the bundle and the call
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
MANIFEST_ROOM = 128 * 1024  # kept free for MANIFEST.json (about 70 KB)
#: Packages rmseg needs at run time that the GPU image lacks (SimpleITK is only imported for raw LA releases).
PACKAGES = ("monai", "hydra-core", "omegaconf", "antlr4-python3-runtime", "nibabel", "edt")
#: Published as a source archive only: built here into a pure-Python wheel.
SOURCE_ONLY = {"antlr4-python3-runtime"}
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *[a for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                            "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", tag)]]
DRISHTI_SIZE = (512, 512)
DRISHTI_SPLITS = {"train": ("Training", "GT"), "test": ("Test", "Test_GT")}
LA_FILE = "mri_norm2.npz"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def tree_bytes(repo: Path = REPO_ROOT) -> int | None:
    """Bytes of what a device call sends besides carried folders: tracked and untracked-not-ignored files."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {repo / p for p in out.decode().split("\0") if p}
    return sum(p.stat().st_size for p in paths if p.is_file())


# ---------------------------------------------------------------- wheels


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def download_wheels(dest: Path, packages: tuple[str, ...] = PACKAGES) -> list[dict[str, Any]]:
    """One wheel per package, at the version installed here, for CPython 3.12 manylinux x86-64; wheels of
    other versions of these packages in ``dest`` are removed (pip refuses two versions of one package)."""
    dest.mkdir(parents=True, exist_ok=True)
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name} is not installed here, so its version is unknown: run `make setup` first") from None

    def wheel_of(name: str) -> Path | None:
        prefix = f"{_canonical(name)}-{versions[name]}-"
        return next((p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)), None)

    for stale in dest.glob("*.whl"):
        if stale.name.split("-")[0].lower() in {_canonical(n) for n in packages} and stale not in map(wheel_of, packages):
            stale.unlink()
    missing = [n for n in packages if wheel_of(n) is None]
    pip = [sys.executable, "-m", "pip"]
    commands = [pip + ["download", "-q", "--no-deps", *PLATFORM, "-d", str(dest)]
                + [f"{n}=={versions[n]}" for n in missing if n not in SOURCE_ONLY],
                pip + ["wheel", "-q", "--no-deps", "-w", str(dest)]
                + [f"{n}=={versions[n]}" for n in missing if n in SOURCE_ONLY]]
    for cmd in commands:
        if "==" not in cmd[-1]:
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"no wheels for CPython 3.12 manylinux x86-64 (`{' '.join(cmd[1:])}` said: "
                               f"{proc.stderr.strip()[-400:]}); PyPI must be reachable")
    records = []
    for name in packages:
        wheel = wheel_of(name)
        if wheel is None:
            raise RuntimeError(f"pip gave no wheel of {name}=={versions[name]}; PyPI must be reachable")
        records.append({"name": name, "version": versions[name], "file": wheel.name, "bytes": wheel.stat().st_size})
    return records


# ---------------------------------------------------------------- LA volumes, lossless


def encode_volume(image: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """A float32 ``(H, W, D)`` volume and its uint8 label as arrays for ``np.savez``: the distinct intensities,
    and the volume as indices into them, differenced along H (modular) and bz2-compressed. Lossless."""
    inverse, values = pd.factorize(image.ravel(), sort=True)  # np.unique's result, by hashing: 4x faster
    if len(values) > 2**16:
        raise ValueError(f"a volume with {len(values)} distinct intensities cannot be stored as 16-bit indices")
    dtype = np.uint8 if len(values) <= 2**8 else np.uint16
    index = np.ascontiguousarray(inverse.reshape(image.shape).astype(dtype).transpose(2, 0, 1))
    delta = index.copy()
    delta[:, 1:] -= index[:, :-1]  # unsigned: wraps, undone by a wrapping cumulative sum
    return {
        "values": np.asarray(values, np.float32),
        "shape": np.array(image.shape),
        "index_dtype": np.array(np.dtype(dtype).name),
        "index": np.frombuffer(bz2.compress(delta.tobytes(), 9), np.uint8),
        "label": np.frombuffer(bz2.compress(np.ascontiguousarray(label, np.uint8).tobytes(), 9), np.uint8),
    }


def decode_volume(arrays: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_volume` (``arrays``: its dict or the loaded npz)."""
    h, w, d = (int(s) for s in arrays["shape"])
    dtype = np.dtype(str(arrays["index_dtype"]))
    delta = np.frombuffer(bz2.decompress(arrays["index"].tobytes()), dtype).reshape(d, h, w)
    index = np.cumsum(delta, axis=1, dtype=dtype).transpose(1, 2, 0)
    label = np.frombuffer(bz2.decompress(arrays["label"].tobytes()), np.uint8).reshape(h, w, d)
    return arrays["values"][index], label.copy()


def _encode_la_case(source: str, target: str) -> int:
    image, label = la.read_h5(source)
    arrays = encode_volume(image, label)
    back_image, back_label = decode_volume(arrays)
    if not (np.array_equal(back_image, image) and np.array_equal(back_label, label)):
        raise ValueError(f"{source}: the recoded volume does not read back equal; keep the h5 file instead")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return Path(target).stat().st_size


# ---------------------------------------------------------------- Drishti-GS at 512x512


def _drishti_paths(release: Path, case_id: str, split: str) -> dict[str, Path]:
    folder, gt = DRISHTI_SPLITS[split]
    soft = release / folder / gt / case_id / "SoftMap"
    return {"image": release / folder / "Images" / f"{case_id}.webp",
            **{k: soft / f"{case_id}{suffix}" for k, suffix in drishti.SOFTMAP_SUFFIX.items()}}


def _write_drishti_case(case: drishti.DrishtiCase, release: str) -> int:
    paths = _drishti_paths(Path(release), case.id, case.split)
    image = drishti.resize_image(drishti.read_png(case.image, "RGB"), DRISHTI_SIZE)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    # lossless; quality is the effort: 25 is as small as 100 here (within 0.1%) in half the time
    Image.fromarray(image).save(paths["image"], "WEBP", lossless=True, quality=25, method=2)
    with Image.open(paths["image"]) as back:
        if not np.array_equal(np.asarray(back.convert("RGB")), image):
            raise ValueError(f"{paths['image']}: lossless WebP did not read back equal")
    for key in drishti.SOFTMAP_SUFFIX:  # nearest neighbour commutes with the threshold preparation applies
        soft = drishti.read_png(getattr(case, key), "L")
        Image.fromarray(drishti.resize_labels(soft, DRISHTI_SIZE)).save(paths[key], optimize=True)
    return sum(p.stat().st_size for p in paths.values())


# ---------------------------------------------------------------- build


def _source_key(data_root: Path) -> dict[str, Any]:
    sums = data_root / "SHA256SUMS"
    return {"format_version": FORMAT_VERSION, "data_root": str(data_root.resolve()),
            "sha256sums": sha256(sums) if sums.is_file() else None}


def _write_data(data_root: Path, tmp: Path, room: int, workers: int) -> dict[str, Any]:
    """Drishti-GS (all cases) then the LA cases into ``tmp``, within ``room`` bytes; the data section of the manifest."""
    cases = drishti.list_cases(data_root / "drishti-gs1")
    release = tmp / "drishti-gs1" / "Drishti-GS1_files"
    la_root, la_out = data_root / "la2018", tmp / "la2018"
    train, test = la.split_cases(la_root, "train", 16), la.split_cases(la_root, "test")
    target = lambda case: str(la_out / la.CASES_DIR / case["id"] / LA_FILE)  # noqa: E731
    with ProcessPoolExecutor(max_workers=workers) as pool:
        used = sum(pool.map(_write_drishti_case, cases, [str(release)] * len(cases)))
        drishti_bytes = used
        used += sum(pool.map(_encode_la_case, [c["path"] for c in train], [target(c) for c in train]))
        if used > room:
            raise RuntimeError(f"Drishti-GS and the 16 LA training cases take {used / MIB:.1f} MiB, over the "
                               f"{room / MIB:.1f} MiB left for data: raise --limit-mib or shrink the working tree")
        kept: list[str] = []
        full = False
        for start in range(0, len(test), workers):  # test.list order: a prefix of it, as many as fit
            chunk = test[start:start + workers]
            sizes = list(pool.map(_encode_la_case, [c["path"] for c in chunk], [target(c) for c in chunk]))
            for case, size in zip(chunk, sizes):
                full = full or used + size > room
                if full:
                    shutil.rmtree(Path(target(case)).parent)
                else:
                    used += size
                    kept.append(case["id"])
            if full:
                break
    la.write_lists(la_out, [c["id"] for c in train], kept)
    return {
        "drishti-gs1": {"size": list(DRISHTI_SIZE), "train": sum(c.split == "train" for c in cases),
                        "test": sum(c.split == "test" for c in cases), "bytes": drishti_bytes},
        "la2018": {"train": [c["id"] for c in train], "test": kept, "test_list_total": len(test),
                   "bytes": used - drishti_bytes},
    }


def build(data_root: Path, out: Path, limit: int | None = None, wheels: bool = True, workers: int = 2) -> dict[str, Any]:
    """Write the bundle into ``out`` (see the module doc) and return its manifest.

    ``limit``: bytes for the whole bundle; default the smaller of 60 MiB and what the working tree leaves of
    the 64 MiB a device call carries (less 1 MiB). ``wheels=False`` leaves the wheels out (no network needed).
    """
    data_root, out = Path(data_root), Path(out)
    missing = [d for d in ("drishti-gs1", "la2018") if not (data_root / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"no {' or '.join(d + '/' for d in missing)} under DATA={data_root}: pass "
                                "DATA=/path/holding/drishti-gs1-and-la2018 (make gpu-bundle DATA=...)")
    start = time.perf_counter()
    tree = tree_bytes()
    if limit is None:
        limit = min(BUNDLE_LIMIT, TRAVEL_LIMIT - TRAVEL_MARGIN - (tree or 0))
    out.mkdir(parents=True, exist_ok=True)
    wheel_records = download_wheels(out / "wheels") if wheels else []
    if not wheels:
        shutil.rmtree(out / "wheels", ignore_errors=True)
    wheel_bytes = sum(w["bytes"] for w in wheel_records)
    key = _source_key(data_root)
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    room = limit - wheel_bytes - MANIFEST_ROOM
    if old.get("data_key") == key and (out / "data").is_dir() and folder_bytes(out / "data") <= room:
        # the same data, still within the limit (which moves with the working tree): reused
        data = old["data"]
    else:
        for stale in out.glob(".data.tmp-*"):  # left by an interrupted build
            shutil.rmtree(stale)
        tmp = out / f".data.tmp-{os.getpid()}"
        data = _write_data(data_root, tmp, room, workers)
        shutil.rmtree(out / "data", ignore_errors=True)
        os.rename(tmp, out / "data")
    files = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {
        "format_version": FORMAT_VERSION,
        "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "limit_bytes": limit,
        "tree_bytes": tree,
        "wheels": wheel_records,
        "data_key": key,
        "data": data,
        "files": files,
        "bytes": sum(f["bytes"] for f in files.values()),
        "build_s": round(time.perf_counter() - start, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    total = folder_bytes(out)
    if total > limit:
        raise RuntimeError(f"{out} takes {total / MIB:.2f} MiB, over its limit of {limit / MIB:.2f} MiB: remove "
                           "files that are not the bundle's, or lower --limit-mib and build again")
    return manifest


# ---------------------------------------------------------------- unpack (on the device machine)


def verify(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking that every file it lists is there with its SHA-256."""
    bundle = Path(bundle)
    if not (bundle / MANIFEST).is_file():
        raise FileNotFoundError(f"no GPU bundle at {bundle} ({MANIFEST} missing): build it with `make gpu-bundle` "
                                "and name the folder in the device call's carry")
    manifest = json.loads((bundle / MANIFEST).read_text())
    bad = [name for name, f in manifest["files"].items()
           if not (bundle / name).is_file() or sha256(bundle / name) != f["sha256"]]
    if bad:
        raise ValueError(f"{len(bad)} file(s) of {bundle} are missing or changed ({', '.join(bad[:4])}): "
                         "rebuild with `make gpu-bundle`")
    return manifest


def unpack(bundle: Path, dest: Path) -> Path:
    """The bundle's data as releases rmseg reads under ``dest`` (``drishti-gs1/``, ``la2018/``); returns ``dest``."""
    manifest = verify(bundle)
    data, dest = Path(bundle) / "data", Path(dest)
    if not (data / "la2018").is_dir():
        raise FileNotFoundError(f"{Path(bundle)} holds no data (built with --no-data?): rebuild with `make gpu-bundle`")
    release = data / "drishti-gs1" / "Drishti-GS1_files"
    for source in sorted(release.rglob("*")):
        if source.is_file():
            target = dest / source.relative_to(data)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix == ".webp":
                with Image.open(source) as image:
                    image.convert("RGB").save(target.with_suffix(".png"), compress_level=1)
            else:
                shutil.copyfile(source, target)
    la_out = dest / "la2018"
    ids = manifest["data"]["la2018"]
    for case_id in ids["train"] + ids["test"]:
        with np.load(data / "la2018" / la.CASES_DIR / case_id / LA_FILE) as arrays:
            image, label = decode_volume(arrays)
        path = la.h5_path(la_out, case_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label)
    la.write_lists(la_out, ids["train"], ids["test"])
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RMSEG_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")),
                        help="folder holding drishti-gs1/ and la2018/ (default $RMSEG_DATA_ROOT or ../shared/data)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "gpu")
    parser.add_argument("--limit-mib", type=float, default=None,
                        help="size of the whole bundle (default: 60, or less where the working tree leaves less of 64)")
    parser.add_argument("--no-wheels", action="store_true", help="leave the wheels out (no network needed)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    limit = None if args.limit_mib is None else int(args.limit_mib * MIB)
    manifest = build(args.data, args.out, limit, wheels=not args.no_wheels, workers=args.workers)
    ids = manifest["data"]["la2018"]
    tree = manifest["tree_bytes"]
    print(f"{args.out}: {manifest['bytes'] / MIB:.1f} MiB (limit {manifest['limit_bytes'] / MIB:.1f} MiB; working tree "
          f"{'unknown' if tree is None else f'{tree / MIB:.1f} MiB'}) in {manifest['build_s']} s")
    print(f"  wheels: {', '.join(w['file'] for w in manifest['wheels']) or 'none'}")
    print(f"  Drishti-GS1 512x512: {manifest['data']['drishti-gs1']['train']} training + "
          f"{manifest['data']['drishti-gs1']['test']} test images, {manifest['data']['drishti-gs1']['bytes'] / MIB:.1f} MiB")
    print(f"  LA 2018: {len(ids['train'])} training + {len(ids['test'])} of {ids['test_list_total']} test cases, "
          f"{ids['bytes'] / MIB:.1f} MiB")
    print(f"carry it with the device call (carry=[\"{os.path.relpath(args.out.resolve(), REPO_ROOT)}\"]) and "
          "run scripts/gpu_check.sh there (docs/gpu.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
