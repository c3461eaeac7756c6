"""LA 2018 (Left Atrial Segmentation Challenge) as preprocessed by UA-MT (Yu et al., MICCAI 2019).

UA-MT layout (what training reads)::

    <root>/train.list, <root>/test.list                     one case id per line
    <root>/2018LA_Seg_Training Set/<id>/mri_norm2.h5        image float32 (H, W, D), label uint8 0/1

The paper's protocol (Ma et al.) trains on the first 16 ids of ``train.list`` and tests on the 20
ids of ``test.list``. The raw challenge release (``<id>/lgemri.nrrd``, ``<id>/laendo.nrrd``) is turned
into the same layout by :func:`prepare_raw` with UA-MT's preprocessing. :func:`write_compact` writes
a smaller copy of the protocol's cases (float16 images) that the same reader reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rmseg.data.prepared import prepare_once, sha256

CASES_DIR = "2018LA_Seg_Training Set"
H5_NAME = "mri_norm2.h5"
LISTS = {"train": "train.list", "test": "test.list"}
FORMAT_VERSION = 1


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"LA root {root} does not exist: download UA-MT's h5 files (make data) and set "
            "data.root=<folder holding train.list> or RMSEG_DATA_ROOT=<folder holding la2018/>"
        )


def read_list(root: Path | str, split: str) -> list[str]:
    """Case ids of ``train.list`` or ``test.list`` (blank lines ignored)."""
    root = Path(root)
    _check_root(root)
    path = root / LISTS[split]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: put UA-MT's {LISTS[split]} (one case id per line; the split of Ma et al., in "
            f"UA-MT's repository github.com/yulequan/UA-MT under data/) in {root}"
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path} lists no case id: restore UA-MT's {LISTS[split]}")
    return ids


def h5_path(root: Path | str, case_id: str) -> Path:
    return Path(root) / CASES_DIR / case_id / H5_NAME


def is_h5_layout(root: Path | str) -> bool:
    return (Path(root) / LISTS["train"]).is_file() and (Path(root) / CASES_DIR).is_dir()


def split_cases(root: Path | str, split: str, num_train: int = 16) -> list[dict[str, str]]:
    """``[{id, path}]`` of the split: the first ``num_train`` ids of train.list, or all of test.list.

    Absent files raise one FileNotFoundError naming the ids.
    """
    root = Path(root)
    ids = read_list(root, split)
    if split == "train":
        if num_train > len(ids):
            raise ValueError(f"data.num_train={num_train} but {root / LISTS['train']} lists only {len(ids)} ids")
        ids = ids[:num_train]
    missing = [i for i in ids if not h5_path(root, i).is_file()]
    if missing:
        present = len(ids) - len(missing)
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise FileNotFoundError(
            f"{len(missing)} of the {len(ids)} {split} ids are absent under {root / CASES_DIR} "
            f"(no {H5_NAME}): {shown}. Only {present} are present; the paper's protocol needs the first 16 "
            "ids of train.list and the 20 of test.list (data.num_train=16), or download the missing cases."
        )
    return [{"id": i, "path": str(h5_path(root, i))} for i in ids]


def read_h5(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, D)`` float32 image and uint8 label of a UA-MT h5 file; bad files name the fix."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise ValueError(f"{path} lacks the dataset(s) {missing}: expected keys 'image' and 'label'; re-download it")
            image = np.asarray(f["image"], dtype=np.float32)
            label = np.asarray(f["label"])
    except OSError as error:
        raise ValueError(f"cannot read h5 file {path} ({error}): the file is corrupt; re-download it") from error
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(
            f"{path}: image shape {image.shape} and label shape {label.shape} must be equal 3D shapes; re-download it"
        )
    return check_volume(path, image, label)


def check_volume(path: Path, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image if finite and the label as uint8 if it holds only LA's classes 0 (background) and 1 (atrium);
    otherwise ValueError naming ``path``, the values found and the fix."""
    finite = np.isfinite(image)
    if not finite.all():
        raise ValueError(f"{path}: the image holds {image.size - int(finite.sum())} NaN/Inf voxels; "
                         "re-download or re-prepare the case (UA-MT's images are z-scored, finite)")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        if not np.issubdtype(label.dtype, np.floating) or (label != np.round(label)).any():
            raise ValueError(f"{path}: the label is stored as {label.dtype} with non-integer values; "
                             "store class indices (uint8: 0 background, 1 atrium)")
    values = np.unique(label)
    if values.min() < 0 or values.max() > 1:
        shown = values[:8].tolist()
        fix = " (0/255 masks: store label // 255)" if set(shown) <= {0, 255} else ""
        raise ValueError(f"{path}: the label holds values {shown} but LA's classes are 0 (background) and "
                         f"1 (atrium): store class indices{fix}")
    return image, label.astype(np.uint8)


def h5_shapes(path: Path | str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``image`` and ``label`` without reading the voxels."""
    with h5py.File(path, "r") as f:
        return tuple(f["image"].shape), tuple(f["label"].shape)


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32), compression="gzip")
        f.create_dataset("label", data=label.astype(np.uint8), compression="gzip")


def write_lists(root: Path, train: list[str], test: list[str]) -> None:
    for split, ids in (("train", train), ("test", test)):
        (root / LISTS[split]).write_text("".join(f"{i}\n" for i in ids))


def ua_mt_preprocess(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    margin: tuple[int, int] = (10, 20),
    min_size: tuple[int, int] = (112, 112),
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """UA-MT's preprocessing of one raw ``(X, Y, Z)`` volume -> (image, label, in-plane crop ``[[lo, hi], [lo, hi]]``).

    z-score over the whole volume; in-plane crop to the label's bounding box widened by a margin drawn
    in ``[margin[0], margin[1])`` per side and, where the bounding box is narrower than ``min_size``,
    by half the shortfall on each side, clipped to the volume; all slices kept. Where clipping at an
    edge leaves the box narrower than ``min_size`` (UA-MT keeps it so), it is extended on the other side
    up to ``min_size`` as far as the volume allows; smaller volumes are padded by the training crop.
    """
    foreground = np.nonzero(label)
    if not foreground[0].size:
        raise ValueError("the label is empty: cannot crop around the atrium")
    bounds = []
    for axis in (0, 1):
        lo, hi = int(foreground[axis].min()), int(foreground[axis].max())
        pad = max(min_size[axis] - (hi - lo), 0) // 2
        lo = max(lo - int(rng.integers(*margin)) - pad, 0)
        hi = min(hi + int(rng.integers(*margin)) + pad, label.shape[axis])
        if hi - lo < min_size[axis]:
            hi = min(lo + min_size[axis], label.shape[axis])
            lo = max(hi - min_size[axis], 0)
        bounds.append(slice(lo, hi))
    image = image.astype(np.float64)
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    return image[bounds[0], bounds[1]], label[bounds[0], bounds[1]], [[b.start, b.stop] for b in bounds]


def find_raw_cases(root: Path | str) -> dict[str, Path]:
    """``{id: folder}`` of raw challenge cases (``<id>/lgemri.nrrd``) one or two levels under ``root``."""
    root = Path(root)
    _check_root(root)
    images = sorted(root.glob("*/lgemri.nrrd")) + sorted(root.glob("*/*/lgemri.nrrd"))
    return {p.parent.name: p.parent for p in images}


def read_nrrd(path: Path) -> np.ndarray:
    """Array in the file's axis order ``(X, Y, Z)`` (as pynrrd, which UA-MT used, returns it)."""
    import SimpleITK as sitk

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: each raw case folder needs lgemri.nrrd and laendo.nrrd")
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    except RuntimeError as error:
        raise ValueError(f"cannot read {path} ({str(error).splitlines()[0]}): the file is corrupt; re-download it") from error


def prepare_raw(root: Path | str, prepared_dir: Path | str, margin: tuple[int, int] = (10, 20), seed: int = 0) -> Path:
    """Write the raw challenge release under ``root`` as UA-MT h5 files + lists into ``prepared_dir``.

    ``root`` must hold UA-MT's ``train.list`` and ``test.list`` beside the case folders. A no-op when
    ``prepared_dir`` holds the same parameters; refused when it holds others.
    """
    root = Path(root)
    folders = find_raw_cases(root)
    if not folders:
        raise FileNotFoundError(f"no raw LA case (<id>/lgemri.nrrd) under {root}: point data.root at the challenge release")
    train, test = read_list(root, "train"), read_list(root, "test")
    absent = [i for i in train + test if i not in folders]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} ids of {root}/train.list or test.list have no <id>/lgemri.nrrd under {root}: "
            f"{', '.join(absent[:8])}; add the cases or remove them from the lists"
        )
    parameters = {"dataset": "la2018-raw", "release": str(root.resolve()), "format_version": FORMAT_VERSION, "margin": list(margin), "seed": seed}

    def write(tmp: Path) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        records = {}
        for case_id in train + test:
            image_path, label_path = folders[case_id] / "lgemri.nrrd", folders[case_id] / "laendo.nrrd"
            image, label = read_nrrd(image_path), read_nrrd(label_path)
            if image.shape != label.shape:
                raise ValueError(f"{label_path} has shape {label.shape} but {image_path} has {image.shape}: restore both")
            label = (label == 255).astype(np.uint8)
            if not label.any():
                raise ValueError(f"{label_path} has no atrium voxel (value 255): the label file is empty or wrong; restore it")
            cropped, cropped_label, crop = ua_mt_preprocess(image, label, rng, margin)
            write_h5(h5_path(tmp, case_id), cropped, cropped_label)
            records[case_id] = {
                "original_size": list(image.shape),
                "prepared_size": list(cropped.shape),
                "crop": crop,
                "sources": {"image": sha256(image_path), "label": sha256(label_path)},
            }
        write_lists(tmp, train, test)
        return {"name": "la2018", "split": {"train": train, "test": test}, "cases": records}

    path, _ = prepare_once(prepared_dir, parameters, write)
    return path


# --- compact copy (smaller transfers: float16 images, compressed) --------------------------------

COMPACT_FORMAT_VERSION = 1
COMPACT_IMAGE_DTYPES = ("float16", "float32")


def _compact_dataset(f: h5py.File, name: str, data: np.ndarray, compression: str, level: int | None) -> None:
    # one chunk per volume (the reader always reads whole volumes; measured smallest on the real cases);
    # no timestamps, so that the same input gives the same bytes
    f.create_dataset(name, data=data, chunks=data.shape, compression=compression,
                     compression_opts=level if compression == "gzip" else None, track_times=False)


def write_compact(
    root: Path | str,
    out: Path | str,
    num_train: int = 16,
    image_dtype: str = "float16",
    compression: str = "gzip",
    level: int = 4,
) -> Path:
    """Copy the protocol's cases (first ``num_train`` ids of train.list, all of test.list) into ``out``,
    same layout, images as ``image_dtype`` and both datasets compressed; ``read_h5`` reads it unchanged.

    ``out`` gets the case files, a train.list holding only those training ids, test.list, and
    ``dataset.json`` (source folder, SHA-256 of every source and compact file, dtype and compression,
    and per case the image's largest absolute and relative error after reading back with
    :func:`read_h5`; labels must come back equal). Written into a temporary sibling and renamed when
    complete. Calling again with the same parameters and unchanged sources is a no-op; an ``out``
    holding anything else is refused.

    On UA-MT's 36 real cases, float16 with gzip level 4 and one chunk per volume was the smallest of
    those tried (gzip 1-9 with and without shuffle, lzf, szip, 64x64xD and slab chunks): shuffle, lzf
    and szip were 40-160% larger, the other gzip levels 0.5-10% larger. It is about 0.79 of the float32
    files (69 MB for 88 MB), near the 66 MB zeroth-order entropy of the float16 values themselves
    (the images hold 68-191 distinct intensities each): no built-in HDF5 filter gets much below it.
    """
    root, out = Path(root), Path(out)
    if image_dtype not in COMPACT_IMAGE_DTYPES:
        raise ValueError(f"image_dtype={image_dtype!r}: choose one of {COMPACT_IMAGE_DTYPES}")
    if compression not in ("gzip", "lzf"):
        raise ValueError(f"compression={compression!r}: choose 'gzip' or 'lzf' (what any h5py reads without plugins)")
    train, test = split_cases(root, "train", num_train), split_cases(root, "test")
    sources = {c["id"]: sha256(Path(c["path"])) for c in train + test}
    parameters = {
        "format_version": COMPACT_FORMAT_VERSION, "source": str(root.resolve()), "num_train": num_train,
        "image_dtype": image_dtype, "compression": compression, "level": level if compression == "gzip" else None,
        "source_sha256": sources,
    }
    def write(tmp: Path) -> dict[str, Any]:
        cases = {}
        for case in train + test:
            case_id, source = case["id"], Path(case["path"])
            image, label = read_h5(source)
            with np.errstate(over="ignore"):
                stored = image.astype(image_dtype)
            if not np.isfinite(stored).all():
                raise ValueError(
                    f"{source}: image values up to {np.abs(image).max():.4g} overflow {image_dtype}; "
                    "use image_dtype='float32' (--image-dtype float32)"
                )
            target = h5_path(tmp, case_id)
            target.parent.mkdir(parents=True)
            with h5py.File(target, "w") as f:
                _compact_dataset(f, "image", stored, compression, level)
                _compact_dataset(f, "label", label, compression, 9)
            back, back_label = read_h5(target)
            if not np.array_equal(back_label, label):
                raise ValueError(f"{target}: the label did not read back equal to {source}")
            error = np.abs(back.astype(np.float64) - image.astype(np.float64))
            nonzero = image != 0
            relative = error[nonzero] / np.abs(image[nonzero].astype(np.float64))
            cases[case_id] = {
                "shape": list(image.shape),
                "source_sha256": sources[case_id],
                "sha256": sha256(target),
                "source_bytes": source.stat().st_size,
                "bytes": target.stat().st_size,
                "image_max_abs_error": float(error.max()),
                "image_max_rel_error": float(relative.max()) if relative.size else 0.0,
                "zero_voxels_exact": bool((back[~nonzero] == 0).all()),
            }
        write_lists(tmp, [c["id"] for c in train], [c["id"] for c in test])
        return {
            "source": parameters["source"],
            "split": {"train": [c["id"] for c in train], "test": [c["id"] for c in test]},
            "image": {"dtype": image_dtype, "compression": compression, "level": parameters["level"],
                      "chunks": "one per volume"},
            "label": {"dtype": "uint8", "compression": compression, "level": 9 if compression == "gzip" else None,
                      "chunks": "one per volume"},
            "error": "image read back with rmseg.data.la.read_h5 minus the source image; relative over non-zero voxels",
            "source_bytes": sum(c["source_bytes"] for c in cases.values()),
            "bytes": sum(c["bytes"] for c in cases.values()),
            "cases": cases,
        }

    path, _ = prepare_once(out, parameters, write)
    return path
