"""Synthetic stand-ins written in the real releases' formats (seeded, deterministic).

They go through exactly the readers and preparation of the real data, so every path of the pipeline
runs on a machine without the downloads.

- Drishti-GS: fundus-like RGB images (dark round field, bright disc, brighter cup, vessels, noise,
  illumination gradient) in the official layout, with 5-level soft maps from 4 simulated experts.
- LA: 3D volumes with an atrium-like blob and texture, as UA-MT h5 files with train/test lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from rmseg.data.la import h5_path, write_h5, write_lists
from rmseg.data.prepared import prepare_once

SOFT_LEVELS = np.array([0, 64, 128, 191, 255], dtype=np.uint8)  # index = number of experts
NUM_EXPERTS = 4


def _ellipse(shape: tuple[int, int], center: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dr, dc = rows - center[0], cols - center[1]
    u = dr * np.cos(angle) + dc * np.sin(angle)
    v = -dr * np.sin(angle) + dc * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def fundus_case(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 image and disc / cup 5-level soft maps ``(H, W)`` uint8."""
    h, w = shape
    scale = min(h, w)
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    field = (rows - h / 2) ** 2 + (cols - w / 2) ** 2 <= (0.47 * scale) ** 2
    center = np.array([0.5 * h, 0.58 * w]) + rng.normal(0, 0.03 * scale, 2)
    disc_radii = 0.09 * scale * np.array([1.08, 0.95]) * rng.uniform(0.85, 1.15, 2)
    cup_radii = disc_radii * rng.uniform(0.45, 0.7)
    angle = rng.uniform(-0.3, 0.3)
    cup_center = center + rng.normal(0, 0.01 * scale, 2)

    experts_disc, experts_cup = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for _ in range(NUM_EXPERTS):
        experts_disc += _ellipse(shape, center + rng.normal(0, 0.004 * scale, 2), disc_radii * rng.uniform(0.95, 1.05, 2), angle)
        cup = _ellipse(shape, cup_center, cup_radii * rng.uniform(0.92, 1.08, 2), angle)
        experts_cup += cup

    gradient = 0.75 + 0.25 * (cols / w) + 0.1 * rng.standard_normal() * (rows / h - 0.5)
    red = 0.55 * gradient
    green = 0.28 * gradient
    blue = 0.12 * gradient
    disc = experts_disc >= 2
    cup = experts_cup >= 2
    disc_glow = ndimage.gaussian_filter(disc.astype(float), 0.01 * scale)
    cup_glow = ndimage.gaussian_filter(cup.astype(float), 0.008 * scale)
    red, green, blue = red + 0.3 * disc_glow + 0.1 * cup_glow, green + 0.35 * disc_glow + 0.25 * cup_glow, blue + 0.2 * disc_glow + 0.25 * cup_glow
    vessels = np.zeros(shape, bool)
    for theta in rng.uniform(0, 2 * np.pi, rng.integers(4, 8)):
        t = np.linspace(0, 0.45 * scale, 4 * scale)
        bend = rng.uniform(-1.5, 1.5) / scale
        rr = np.clip(center[0] + t * np.sin(theta + bend * t), 0, h - 1).astype(int)
        cc = np.clip(center[1] + t * np.cos(theta + bend * t), 0, w - 1).astype(int)
        vessels[rr, cc] = True
    vessels = ndimage.binary_dilation(vessels, iterations=max(1, scale // 200))
    darken = 1 - 0.45 * ndimage.gaussian_filter(vessels.astype(float), 0.8)
    rgb = np.stack([red * darken, green * darken, blue * darken], axis=-1)
    rgb += rng.normal(0, 0.02, rgb.shape)
    rgb *= field[..., None]
    image = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    return image, SOFT_LEVELS[experts_disc], SOFT_LEVELS[experts_cup]


def write_gs_synthetic(root: Path | str, num_train: int = 12, num_test: int = 8, shape=(256, 256), seed: int = 0) -> Path:
    """Synthetic Drishti-GS in the official layout under ``root`` (no-op if already there with these sizes)."""
    parameters = {"dataset": "gs_synthetic", "num_train": num_train, "num_test": num_test, "shape": list(shape), "seed": seed}

    def write(tmp: Path) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        base = tmp / "Drishti-GS1_files"
        split = {"train": [], "test": []}
        for n in range(num_train + num_test):
            case_id = f"drishtiGS_{n + 1:03d}"
            train = n < num_train
            folder, gt = ("Training", "GT") if train else ("Test", "Test_GT")
            image, disc, cup = fundus_case(tuple(shape), rng)
            (base / folder / "Images").mkdir(parents=True, exist_ok=True)
            soft = base / folder / gt / case_id / "SoftMap"
            soft.mkdir(parents=True)
            Image.fromarray(image).save(base / folder / "Images" / f"{case_id}.png")
            Image.fromarray(disc).save(soft / f"{case_id}_ODsegSoftmap.png")
            Image.fromarray(cup).save(soft / f"{case_id}_cupsegSoftmap.png")
            split["train" if train else "test"].append(case_id)
        return {"name": "gs_synthetic", "split": split}

    return prepare_once(root, parameters, write)[0]


def atrium_case(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, D)`` z-scored float32 MRI-like volume and uint8 label of an atrium-like blob."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), axis=-1)
    center = np.array(shape) * np.array([0.5, 0.5, 0.5]) + rng.normal(0, 0.05, 3) * np.array(shape)
    level = np.zeros(shape)
    for _ in range(3):  # body plus two pulmonary-vein-like lobes
        c = center + rng.normal(0, 0.08, 3) * np.array(shape)
        r = np.maximum(np.array(shape) * rng.uniform(0.12, 0.22, 3), 2.5)
        level = np.maximum(level, np.exp(-(((grid - c) / r) ** 2).sum(-1)))
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), 3) * 2.0
    label = (level + 0.15 * wobble > 0.45).astype(np.uint8)
    label = ndimage.binary_opening(label, iterations=1).astype(np.uint8)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 2.0
    image = 0.3 + 0.6 * label + 0.15 * texture + 0.05 * rng.standard_normal(shape)
    image += 0.2 * (grid[..., 0] / shape[0])  # coil bias field
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), label


def write_la_synthetic(root: Path | str, num_train: int = 8, num_test: int = 4, shape=(96, 96, 48), seed: int = 0) -> Path:
    """Synthetic LA as UA-MT h5 files + train/test lists under ``root`` (no-op if already there)."""
    parameters = {"dataset": "la_synthetic", "num_train": num_train, "num_test": num_test, "shape": list(shape), "seed": seed}

    def write(tmp: Path) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        ids = [f"SYNTH{n:03d}" for n in range(num_train + num_test)]
        for case_id in ids:
            image, label = atrium_case(tuple(shape), rng)
            write_h5(h5_path(tmp, case_id), image, label)
        write_lists(tmp, ids[:num_train], ids[num_train:])
        return {"name": "la_synthetic", "split": {"train": ids[:num_train], "test": ids[num_train:]}}

    return prepare_once(root, parameters, write)[0]


def write_la_raw_synthetic(root: Path | str, ids: list[str], train: list[str], shape=(160, 150, 20), seed: int = 0) -> Path:
    """Raw challenge-style cases (``<root>/<id>/lgemri.nrrd``, ``laendo.nrrd`` with atrium = 255) + lists.

    Arrays are written in ``(X, Y, Z)`` file order, as the challenge's nrrd files hold them.
    """
    import SimpleITK as sitk

    root = Path(root)
    rng = np.random.default_rng(seed)
    for case_id in ids:
        image, label = atrium_case(tuple(shape), rng)
        (root / case_id).mkdir(parents=True, exist_ok=True)
        raw = (image * 40 + 200).clip(0, None).astype(np.uint16)
        for name, array in (("lgemri.nrrd", raw), ("laendo.nrrd", label * np.uint8(255))):
            sitk.WriteImage(sitk.GetImageFromArray(array.transpose(2, 1, 0)), str(root / case_id / name))
    write_lists(root, train, [i for i in ids if i not in train])
    return root
