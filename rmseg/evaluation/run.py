"""A trained model of a run config -> the run's records: what ``rmseg-train`` does after training and
``rmseg-eval --checkpoint`` does with a checkpoint, in one place."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rmseg.evaluation.config import EvalConfig, eval_config
from rmseg.evaluation.inference import evaluate_model, head_of
from rmseg.evaluation.records import summary_meta, write_summary


def evaluate_run_model(model: torch.nn.Module, config: Mapping[str, Any], out: str | Path, *, eval_cfg: EvalConfig | Any,
                       device: str | torch.device, iterations: int | None, train_time_s: float | None = None,
                       checkpoint: str | Path | None = None) -> Path:
    """Evaluate ``model`` on the test cases of the resolved run ``config`` (its ``data``, ``model.head``,
    ``name``, ``seed``, ``protocol``) and write ``summary.json`` + ``per_case.csv`` (and the predictions
    ``eval_cfg`` asks for) into ``out``; ``eval_time_s`` counts inference and metrics. Returns the summary path."""
    from rmseg.data import load_test_cases

    out, eval_cfg = Path(out), eval_config(eval_cfg)
    cases = load_test_cases(config["data"])
    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        per_case = evaluate_model(model, cases, data_cfg=config["data"], eval_cfg=eval_cfg, device=device,
                                  probabilities_fn=head_of(config["model"], config.get("loss")),
                                  predictions_dir=out / "predictions")
    write_summary(out, per_case, summary_meta(
        config["data"], experiment=config["name"], seed=config.get("seed"), convention=eval_cfg.convention,
        iterations=iterations, protocol=(config.get("protocol") or {}).get("name"), train_time_s=train_time_s,
        eval_time_s=time.perf_counter() - started, checkpoint=checkpoint, case_ids=[str(c["id"]) for c in cases]))
    return out / "summary.json"
