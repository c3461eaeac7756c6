"""Drishti-GS1 (Sivaswamy et al., ISBI 2014): reading the official release and preparing it.

Release layout (``root`` may be the folder holding ``Drishti-GS1_files/``, that folder itself, or a
doubly nested ``Drishti-GS1_files/Drishti-GS1_files/``)::

    Training/Images/drishtiGS_XXX.png            (or Training/Images/ALL/)
    Training/GT/<id>/SoftMap/<id>_ODsegSoftmap.png, <id>_cupsegSoftmap.png
    Test/Images/drishtiGS_XXX.png                (or Test/Images/ALL/)
    Test/Test_GT/<id>/SoftMap/...                (or Test/GT/)

Official split: 50 training / 51 test images (the paper says 50 test). Soft maps hold 5 levels
(0, 64, 128, 191, 255 = how many of the 4 experts marked the pixel); a structure is ``soft > threshold``
(default 128: at least 3 of the 4 experts, the majority).
Label map: background 0, disc outside the cup 1, cup 2 (evaluated: disc = {1, 2}, cup = {2}).
Arrays are row-major ``(H, W[, C])`` as numpy reads a PIL image; nothing is transposed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rmseg.data.prepared import prepare_once, read_manifest, sha256

SPLITS = {"train": ("Training", ("GT",)), "test": ("Test", ("Test_GT", "GT"))}
SOFTMAP_SUFFIX = {"disc": "_ODsegSoftmap.png", "cup": "_cupsegSoftmap.png"}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DrishtiCase:
    """Source files of one case of the release."""

    id: str
    split: str
    image: Path
    disc: Path
    cup: Path


def find_release(root: Path | str) -> Path:
    """The folder holding ``Training/`` and ``Test/`` under ``root`` (official layout or a variant)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Drishti-GS root {root} does not exist: download the release (make data) and set "
            "data.root=<folder holding Drishti-GS1_files> or RMSEG_DATA_ROOT=<folder holding drishti-gs1/>"
        )
    for candidate in (root, root / "Drishti-GS1_files", root / "Drishti-GS1_files" / "Drishti-GS1_files"):
        if (candidate / "Training").is_dir() and (candidate / "Test").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no Drishti-GS release under {root}: expected {root}/Drishti-GS1_files/Training and .../Test "
        "(official layout); point data.root at the folder holding Drishti-GS1_files"
    )


def _images_dir(split_dir: Path) -> Path:
    images = split_dir / "Images"
    return images / "ALL" if (images / "ALL").is_dir() else images


def list_cases(root: Path | str) -> list[DrishtiCase]:
    """Every case of both splits, sorted by id; errors name the missing file and the fix."""
    release = find_release(root)
    cases = []
    for split, (folder, gt_names) in SPLITS.items():
        split_dir = release / folder
        images_dir = _images_dir(split_dir)
        gt_dir = next((split_dir / n for n in gt_names if (split_dir / n).is_dir()), None)
        if gt_dir is None:
            raise FileNotFoundError(
                f"ground-truth folder missing: expected {split_dir}/{gt_names[0]} "
                f"(or {'/'.join(gt_names[1:]) or 'none'}); re-extract the complete release"
            )
        images = sorted(images_dir.glob("*.png")) if images_dir.is_dir() else []
        if not images:
            raise FileNotFoundError(f"no PNG images in {images_dir}: re-extract the complete release there")
        image_ids = {p.stem for p in images}
        for gt_case in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
            if gt_case.name not in image_ids:
                raise FileNotFoundError(
                    f"{gt_case} has ground truth but its image {images_dir / (gt_case.name + '.png')} is absent: "
                    "restore the image or remove the case folder"
                )
        for image in images:
            soft = gt_dir / image.stem / "SoftMap"
            paths = {k: soft / f"{image.stem}{suffix}" for k, suffix in SOFTMAP_SUFFIX.items()}
            for path in paths.values():
                if not path.is_file():
                    raise FileNotFoundError(
                        f"image {image} has no soft map {path}: restore it from the release or remove the image"
                    )
            cases.append(DrishtiCase(image.stem, split, image, paths["disc"], paths["cup"]))
    return sorted(cases, key=lambda c: c.id)


def read_png(path: Path, mode: str) -> np.ndarray:
    """PNG as a row-major numpy array (``(H, W)`` for mode L, ``(H, W, 3)`` for RGB).

    A 16-bit gray PNG read in mode L is rescaled from 0..65535 to 0..255 (rounded), not clipped.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if mode == "L" and (image.mode.startswith("I;16") or image.mode == "I"):
                wide = np.asarray(image).astype(np.float64)
                return np.rint(wide * (255 / 65535)).astype(np.uint8)
            if mode == "L" and image.mode not in ("L", "P"):
                image = image.convert("L")  # some mirrors store soft maps as gray RGB
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read PNG {path} ({error}): the file is corrupt; re-download it") from error


def soft_map_mask(soft: np.ndarray, threshold: int, path: Path) -> np.ndarray:
    """Binary mask ``soft > threshold``; an empty soft map or mask is an error naming ``path``."""
    mask = soft > threshold
    if not mask.any():
        raise ValueError(
            f"soft map {path} has no pixel above threshold {threshold} (max {int(soft.max())}): the file is "
            "empty or wrong; re-download it, or lower data.threshold"
        )
    return mask


def label_map(disc: np.ndarray, cup: np.ndarray, case_id: str) -> np.ndarray:
    """uint8 label map: 0 background, 1 disc outside the cup, 2 cup; warns if the cup leaves the disc."""
    outside = int(np.count_nonzero(cup & ~disc))
    if outside:
        warnings.warn(f"{case_id}: {outside} cup pixels lie outside the disc; they are labelled cup (2)", stacklevel=2)
    labels = disc.astype(np.uint8)
    labels[cup] = 2
    return labels


def read_case(case: DrishtiCase, threshold: int, max_size_mismatch: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution ``(H, W, 3)`` uint8 image and ``(h, w)`` uint8 label map of the release.

    The release's soft maps are up to 1 pixel smaller than their images in most cases; a difference
    above ``max_size_mismatch`` pixels is an error (both cover the same field and are resized separately).
    """
    image = read_png(case.image, "RGB")
    disc_soft, cup_soft = read_png(case.disc, "L"), read_png(case.cup, "L")
    for path, soft in ((case.disc, disc_soft), (case.cup, cup_soft)):
        diff = np.abs(np.subtract(soft.shape, image.shape[:2]))
        if diff.max() > max_size_mismatch or soft.shape != disc_soft.shape:
            raise ValueError(
                f"soft map {path} is {soft.shape[0]}x{soft.shape[1]} but image {case.image} is "
                f"{image.shape[0]}x{image.shape[1]} (H x W; tolerance {max_size_mismatch} px): the pair does "
                "not match; restore both from the release"
            )
    disc = soft_map_mask(disc_soft, threshold, case.disc)
    cup = soft_map_mask(cup_soft, threshold, case.cup)
    return image, label_map(disc, cup, case.id)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking, bilinear when enlarging; ``size`` is (H, W)."""
    shrinking = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    return np.asarray(pil)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour; ``size`` is (H, W)."""
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.Resampling.NEAREST))


def preparation_parameters(
    release: Path, image_size: tuple[int, int], threshold: int, max_size_mismatch: int
) -> dict[str, Any]:
    return {
        "dataset": "drishti-gs1",
        "release": str(release.resolve()),
        "format_version": FORMAT_VERSION,
        "image_size": list(image_size),
        "threshold": int(threshold),
        "max_size_mismatch": int(max_size_mismatch),
    }


def prepare(
    root: Path | str,
    prepared_dir: Path | str,
    image_size: tuple[int, int] = (512, 512),
    threshold: int = 128,
    max_size_mismatch: int = 2,
) -> Path:
    """Prepare the release into ``prepared_dir`` (``images/<id>.png``, ``labels/<id>.png``, ``dataset.json``).

    A no-op when ``prepared_dir`` already holds the same parameters; refused when it holds others.
    """
    release = find_release(root)
    cases = list_cases(release)
    size = (int(image_size[0]), int(image_size[1]))

    def write(tmp: Path) -> dict[str, Any]:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        records = {}
        for case in cases:
            image, labels = read_case(case, threshold, max_size_mismatch)
            Image.fromarray(resize_image(image, size)).save(tmp / "images" / f"{case.id}.png", compress_level=1)
            Image.fromarray(resize_labels(labels, size)).save(tmp / "labels" / f"{case.id}.png", compress_level=1)
            records[case.id] = {
                "split": case.split,
                "original_size": list(image.shape[:2]),
                "label_original_size": list(labels.shape),
                "sources": {k: {"path": str(getattr(case, k)), "sha256": sha256(getattr(case, k))} for k in ("image", "disc", "cup")},
            }
        return {
            "name": "drishti-gs1",
            "labels": {"background": 0, "disc_outside_cup": 1, "cup": 2},
            "split": {s: [c.id for c in cases if c.split == s] for s in SPLITS},
            "cases": records,
        }

    path, _ = prepare_once(prepared_dir, preparation_parameters(release, size, threshold, max_size_mismatch), write)
    return path


def prepared_cases(prepared_dir: Path | str, split: str) -> list[dict[str, str]]:
    """``[{id, image, label}]`` file paths of a split of a prepared dataset."""
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    ids = manifest["split"][split]
    if not ids:
        raise ValueError(f"{prepared_dir}/dataset.json lists no {split} case: prepare the complete release")
    return [
        {"id": i, "image": str(prepared_dir / "images" / f"{i}.png"), "label": str(prepared_dir / "labels" / f"{i}.png")}
        for i in ids
    ]


def load_prepared(case: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``(3, H, W)`` float32 image in [0, 1] and ``(H, W)`` int64 label map of one prepared case."""
    image = read_png(Path(case["image"]), "RGB")
    labels = read_png(Path(case["label"]), "L")
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0, labels.astype(np.int64)
