"""``curve.csv``: a run's training curve, one row per logged iteration, machine-readable.

Columns: ``iteration``, ``lr``, ``loss`` (the total), each unweighted part of the loss (``ce_dice``, each
term by class name), ``grad_<part>`` (L2 norm of the gradient of that weighted part with respect to the
logits, ``SegmentationLoss.gradient_norms``) and ``share_<term>`` (a term's gradient norm over CE + Dice's:
how hard the term pulls on the prediction relative to the base objective). A resumed run first drops
the rows after its checkpoint, so the file holds each iteration once.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path


def gradient_shares(norms: Mapping[str, float]) -> dict[str, float]:
    """``share_<term>`` = gradient norm of each term / that of ``ce_dice`` (NaN when CE + Dice pulls with 0)."""
    base = norms.get("ce_dice")
    if base is None:
        return {}
    return {f"share_{k}": (v / base if base > 0 else float("nan")) for k, v in norms.items() if k != "ce_dice"}


class CurveLog:
    """Appends rows to ``path``; with ``resume_from`` keeps only the rows up to that iteration first."""

    def __init__(self, path: Path, resume_from: int = 0) -> None:
        self.path, self.columns = Path(path), None
        if self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = reader.fieldnames
                kept = [row for row in reader if int(row["iteration"]) <= resume_from]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, self.path)

    def append(self, row: Mapping[str, float]) -> None:
        """Write one row (the first row fixes the columns; a later row must have the same keys)."""
        new = self.columns is None
        if new:
            self.columns = list(row)
        elif set(row) != set(self.columns):
            raise ValueError(f"curve row keys {sorted(row)} differ from {self.path}'s columns {sorted(self.columns)}")
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
