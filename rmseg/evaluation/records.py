"""The one writer and reader of a run's records: ``summary.json``, ``per_case.csv`` (written together by
:func:`write_summary`) and ``curve.csv`` (read by :func:`read_curve`; written during training by
``rmseg.engine.curve.CurveLog``).

Every summary, of a training run or of ``rmseg-eval``, has the keys :data:`SUMMARY_KEYS` (``None`` where
they do not apply), built by :func:`summary_meta`, plus ``cases`` (one row per (case, structure), the
columns of ``per_case.csv``), ``mean``, ``std`` and ``flags``. Times are explicit: ``train_time_s`` (the
training loop, resumed segments summed) and ``eval_time_s`` (test-set inference and metrics).
Summaries written before that split hold one ``wall_time_s``; :func:`read_summary` maps it to
``train_time_s`` for a training run and to ``eval_time_s`` for an ``rmseg-eval`` one (``checkpoint`` or
``predictions`` set).

Tables, figures, the alpha sweep and the benchmarks read summaries and curves only through this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rmseg.evaluation.per_case import FLAGS, METRIC_NAMES, METRICS, PERCENT, ROW_COLUMNS

#: The keys every ``summary.json`` has besides ``cases``/``mean``/``std``/``flags``, in the order written.
SUMMARY_KEYS = ("experiment", "seed", "dataset", "source", "structures", "convention", "iterations", "protocol",
                "input_downsample", "eval_grid", "train_time_s", "eval_time_s", "checkpoint", "predictions")
#: Keys a caller may add to :data:`SUMMARY_KEYS` (read by ``rmseg.reporting.tables.distance_unit_scale``).
OPTIONAL_KEYS = ("distance_unit_scale",)
#: Share of a structure's test cases with an empty prediction above which :func:`summary_report` warns.
MOSTLY_EMPTY = 0.5


def summary_meta(data: Mapping[str, Any], *, experiment: str, seed: int | None, convention: str,
                 iterations: int | None, protocol: str | None = None, train_time_s: float | None = None,
                 eval_time_s: float | None = None, checkpoint: str | None = None,
                 predictions: str | None = None, case_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The :data:`SUMMARY_KEYS` of a summary (``eval_grid`` comes from the per-case rows) from the resolved
    ``data`` config of the evaluated cases and what the caller knows: a training run gives ``protocol``
    and ``train_time_s``, ``rmseg-eval`` the ``checkpoint`` or ``predictions`` it evaluated."""
    data = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
    meta = {
        "experiment": experiment, "seed": seed, "dataset": data["name"], "source": data.get("source"),
        "structures": data["structures"], "convention": convention, "iterations": iterations, "protocol": protocol,
        "input_downsample": data.get("downsample"),
        "train_time_s": None if train_time_s is None else round(float(train_time_s), 3),
        "eval_time_s": None if eval_time_s is None else round(float(eval_time_s), 3),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "predictions": None if predictions is None else str(predictions),
    }
    if case_ids is not None:
        meta["case_ids"] = [str(c) for c in case_ids]
    return meta


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def current_umask() -> int:
    """The process's umask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # what open() gives, not mkstemp's 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summarize(per_case: pd.DataFrame, structures: Sequence[str]) -> dict:
    """``mean``/``std`` (over cases, population std, NaN ignored) and flag counts per structure."""
    mean, std, flags = {}, {}, {}
    for structure in structures:
        rows = per_case[per_case["structure"] == structure]
        values = rows[list(METRICS)].astype(float).replace([np.inf, -np.inf], np.nan)
        mean[structure] = {m: _finite_or_none(values[m].mean()) for m in METRICS}
        std[structure] = {m: _finite_or_none(values[m].std(ddof=0)) for m in METRICS}
        flags[structure] = {f: int(rows[f].astype(bool).sum()) for f in FLAGS}
        flags[structure]["undefined"] = {m: int(values[m].isna().sum()) for m in METRICS}
    return {"mean": mean, "std": std, "flags": flags}


def write_summary(out_dir: str | Path, per_case_df: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Write ``summary.json`` and ``per_case.csv`` into ``out_dir`` (each via temp file + rename).

    ``meta``: :func:`summary_meta`'s keys (experiment, seed, dataset and structures ({name: label ids}) are
    required; any other of :data:`SUMMARY_KEYS` absent is written as ``null``), optionally
    :data:`OPTIONAL_KEYS`. ``eval_grid`` (the evaluated label shape, null when cases differ) comes from
    ``meta`` or ``per_case_df.attrs``. The test ids come from ``meta["case_ids"]`` or ``per_case_df.attrs["case_ids"]``
    (set by ``rmseg.evaluation.evaluate_predictions``); a test id or structure without a row is a ValueError.
    Non-finite metric values are written as ``null`` (counted under ``flags.undefined``).
    """
    required = ("experiment", "seed", "dataset", "structures")
    missing_keys = [k for k in required if k not in meta]
    if missing_keys:
        raise ValueError(f"summary meta lacks {missing_keys}; give experiment, seed, dataset, structures")
    unknown = sorted(set(meta) - set(SUMMARY_KEYS) - set(OPTIONAL_KEYS) - {"case_ids"})
    if unknown:
        raise ValueError(f"summary meta keys {unknown} are not summary keys {list(SUMMARY_KEYS)}: build it with summary_meta")
    case_ids = meta.get("case_ids", per_case_df.attrs.get("case_ids"))
    if case_ids is None:
        raise ValueError("write_summary needs the test ids: meta['case_ids'] or per_case_df.attrs['case_ids']")
    absent_cols = [c for c in ROW_COLUMNS if c not in per_case_df.columns]
    if absent_cols:
        raise ValueError(f"per-case rows lack columns {absent_cols}")
    structures = list(dict(meta["structures"]))
    present = set(zip(per_case_df["id"].astype(str), per_case_df["structure"].astype(str)))
    missing = [(cid, s) for cid in map(str, case_ids) for s in structures if (cid, s) not in present]
    if missing:
        raise ValueError(f"no metric row for (case, structure) {missing[:10]}: every test case must be evaluated")
    extra = sorted({cid for cid, _ in present} - set(map(str, case_ids)))
    if extra:
        raise ValueError(f"rows for case ids {extra[:10]} that are not test cases")
    if per_case_df.duplicated(["id", "structure"]).any():
        dup = per_case_df.loc[per_case_df.duplicated(["id", "structure"]), ["id", "structure"]].values.tolist()
        raise ValueError(f"duplicate rows for (case, structure) {dup[:10]}")

    rows = per_case_df[list(ROW_COLUMNS)].sort_values(["id", "structure"]).reset_index(drop=True)
    cases = [{k: _finite_or_none(v) for k, v in rec.items()} for rec in rows.to_dict("records")]
    given = {k: (OmegaConf.to_container(v) if isinstance(v, DictConfig) else v) for k, v in meta.items()}
    given.setdefault("eval_grid", per_case_df.attrs.get("eval_grid"))
    meta_out = {k: given.get(k) for k in SUMMARY_KEYS}
    meta_out.update({k: given[k] for k in OPTIONAL_KEYS if k in given})
    summary = {**meta_out, "cases": cases, **summarize(rows, structures)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "per_case.csv", rows.to_csv(index=False))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")


def _normalized_times(summary: dict) -> dict:
    """``train_time_s`` / ``eval_time_s`` of a summary written before the split (one ``wall_time_s``)."""
    if "wall_time_s" in summary and "train_time_s" not in summary:
        wall = summary.pop("wall_time_s")
        evaluated = summary.get("checkpoint") is not None or summary.get("predictions") is not None
        summary["train_time_s"], summary["eval_time_s"] = (None, wall) if evaluated else (wall, None)
    return summary


def read_summary(path: str | Path) -> dict:
    """Load and check a ``summary.json``: required keys, one row per (case, structure), metrics present.

    Raises FileNotFoundError / ValueError naming the file and what is wrong. ``null`` metrics become NaN;
    an older summary's ``wall_time_s`` becomes ``train_time_s`` or ``eval_time_s`` (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"summary {path} does not exist")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"summary {path} is not valid JSON ({err}); re-run rmseg-eval on that run") from err
    if not isinstance(summary, dict):
        raise ValueError(f"summary {path} must hold a JSON object")
    missing = [k for k in ("experiment", "seed", "dataset", "structures", "cases") if k not in summary]
    if missing:
        raise ValueError(f"summary {path} lacks keys {missing}; re-run rmseg-eval on that run")
    if not isinstance(summary["cases"], list) or not summary["cases"]:
        raise ValueError(f"summary {path}: 'cases' must be a non-empty list")
    for i, case in enumerate(summary["cases"]):
        absent = [k for k in ("id", "structure", *METRICS) if k not in case]
        if absent:
            raise ValueError(f"summary {path}: cases[{i}] lacks {absent}")
        for m in METRICS:
            v = case[m]
            if v is None:
                case[m] = float("nan")
            elif not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"summary {path}: cases[{i}].{m} = {v!r} is not a number")
    pairs = [(str(c["id"]), str(c["structure"])) for c in summary["cases"]]
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"summary {path}: duplicate (case, structure) rows")
    unknown = sorted({s for _, s in pairs} - set(summary["structures"]))
    if unknown:
        raise ValueError(f"summary {path}: rows for structures {unknown} not in 'structures'")
    ids, seen = {cid for cid, _ in pairs}, set(pairs)
    incomplete = sorted((cid, s) for cid in ids for s in summary["structures"] if (cid, s) not in seen)
    if incomplete:
        raise ValueError(f"summary {path}: no row for (case, structure) {incomplete[:10]}")
    return _normalized_times(summary)


def read_times(path: str | Path) -> dict[str, float | None]:
    """``train_time_s`` and ``eval_time_s`` of a ``summary.json`` (of any age), without checking its rows."""
    summary = _normalized_times(json.loads(Path(path).read_text()))
    return {k: summary.get(k) for k in ("train_time_s", "eval_time_s")}


def read_per_case(path: str | Path) -> pd.DataFrame:
    """A run's ``per_case.csv`` (one row per (case, structure), :data:`ROW_COLUMNS` as written by
    :func:`write_summary`); FileNotFoundError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-case table {path} does not exist")
    return pd.read_csv(path, dtype={"id": str})


def read_curve(path: str | Path) -> pd.DataFrame:
    """A run's ``curve.csv``: one row per logged iteration (``iteration``, ``lr``, ``loss``, the loss parts,
    ``grad_*``, ``share_*``), sorted by iteration. FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curve {path} does not exist (runs log one since curve.csv was added; train again)")
    curve = pd.read_csv(path)
    if not {"iteration", "loss"} <= set(curve.columns):
        raise ValueError(f"curve {path} lacks the iteration/loss columns (it has {list(curve.columns)})")
    return curve.sort_values("iteration").reset_index(drop=True)


def empty_predictions(df: pd.DataFrame, structure: str) -> tuple[int, int]:
    """Cases of a structure whose prediction is empty, and cases in all."""
    rows = df[df["structure"] == structure]
    empty = int(rows["pred_empty"].astype(bool).sum()) if "pred_empty" in rows else 0
    return empty, len(rows)


def summary_report(summary: Mapping[str, Any]) -> list[tuple[int, str]]:
    """``(logging level, line)`` pairs saying a finished run's mean test metrics per structure, and a
    warning per structure whose predictions are mostly empty (:data:`MOSTLY_EMPTY`)."""
    cases = pd.DataFrame(summary["cases"])
    n = cases["id"].nunique()
    lines = [(logging.INFO, f"test set: {summary['experiment']} seed {summary['seed']}, {n} cases, mean over cases "
                            "(Dice and Jaccard in %, 95HD and ASD in pixels/voxels as evaluated)")]
    for structure in summary["structures"]:
        rows = cases[cases["structure"] == structure]
        means = {m: pd.to_numeric(rows[m], errors="coerce").mean() for m in METRICS}
        shown = "  ".join(f"{METRIC_NAMES[m]} {means[m] * (100 if m in PERCENT else 1):7.2f}" for m in METRICS)
        lines.append((logging.INFO, f"  {structure:<10} {shown}"))
        empty, total = empty_predictions(rows, structure)
        if empty and empty >= MOSTLY_EMPTY * total:
            lines.append((logging.WARNING, f"{structure}: the prediction is empty in {empty} of {total} test cases; "
                                           "the model has (almost) not learnt this structure"))
    return lines


def log_summary(path: str | Path, logger: logging.Logger) -> None:
    """Log :func:`summary_report` of the ``summary.json`` at ``path`` (end of ``rmseg-train``)."""
    for level, line in summary_report(read_summary(path)):
        logger.log(level, line)
