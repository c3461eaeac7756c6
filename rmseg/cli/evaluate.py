"""``rmseg-eval``: evaluate a trained checkpoint, or a folder of predictions, on a dataset's test cases.

    rmseg-eval --checkpoint results/runs/table1/rm20/seed0/checkpoint.pt --out results/eval/rm20_seed0
    rmseg-eval --predictions my_preds/ --data gs --out results/eval/mine [--data-override root=...]
    rmseg-eval --checkpoint .../checkpoint.pt --out results/eval/x --data-override root=data/la2018_compact

A checkpoint carries its resolved config (``data``, ``model`` with its output ``head``, ``eval``); predictions are label
maps named by case id (``<id>.png`` in 2D, ``<id>.nii.gz`` in 3D) evaluated against the test cases of
``--data`` (a name under ``configs/data/`` or a YAML file). Writes ``summary.json`` and
``per_case.csv`` into ``--out`` (``rmseg.evaluation.records``: the same keys as a training run's summary,
with ``eval_time_s`` and the ``checkpoint`` or ``predictions`` evaluated); an existing ``summary.json``
there is never overwritten. Nothing here imports the training side.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rmseg.config.compose import CONFIG_DIR
from rmseg.engine.checkpoint import read_checkpoint
from rmseg.evaluation import (
    eval_config,
    evaluate_predictions,
    evaluate_run_model,
    load_prediction_folder,
    read_summary,
    summary_meta,
    summary_report,
    write_summary,
)


def load_data_config(data: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A resolved data config: a name in ``configs/data/`` composed by Hydra (``overrides`` as
    ``key=value`` under ``data``), or a YAML file (a data node, or a run's ``config.yaml``)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"data overrides {bad} must be key=value")
    path = Path(data)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"data config file {path} does not exist")
        cfg = OmegaConf.load(path)
        cfg = cfg.data if "data" in cfg else cfg
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    names = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
    if data not in names:
        raise FileNotFoundError(f"data config {data!r} is neither a YAML file nor one of configs/data/: {names}")
    from rmseg.config.compose import compose_config

    cfg = compose_config([f"data={data}", *[f"data.{o}" for o in overrides]])
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))


def _check_out(out: Path) -> None:
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out / 'summary.json'} exists; choose another --out (results are never overwritten)")


def evaluate_checkpoint(
    checkpoint: str | Path, out: str | Path, *, device: str = "cpu", save: str | None = None, workers: int | None = None,
    data_overrides: Sequence[str] = (),
) -> Path:
    """Evaluate a run's checkpoint on its data config's test cases, with ``data_overrides`` (``key=value``
    under ``data``, e.g. ``root=/elsewhere`` for the same data at another place); return the summary path."""
    from rmseg.models import build_model

    out = Path(out)
    _check_out(out)
    ckpt = read_checkpoint(checkpoint)
    cfg = ckpt["config"]
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    if data_overrides:
        bad = [o for o in data_overrides if "=" not in o]
        if bad:
            raise ValueError(f"data overrides {bad} must be key=value")
        unknown = [o.split("=", 1)[0] for o in data_overrides if o.split("=", 1)[0].split(".")[0] not in cfg["data"]]
        if unknown:
            raise ValueError(f"data overrides {unknown} name no key of the checkpoint's data config {sorted(cfg['data'])}")
        data = OmegaConf.merge(OmegaConf.create(cfg["data"]), OmegaConf.from_dotlist(list(data_overrides)))
        cfg["data"] = OmegaConf.to_container(data, resolve=True)
    ecfg = OmegaConf.create(cfg.get("eval") or {})
    if save is not None:
        ecfg.save_predictions = save
    if workers is not None:
        ecfg.workers = workers
    ecfg = eval_config(ecfg)
    model = build_model(cfg["model"], cfg["data"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {checkpoint} does not match its model config: {err}") from err
    model.to(device)
    cfg.setdefault("name", Path(checkpoint).parent.parent.name)
    return evaluate_run_model(model, cfg, out, eval_cfg=ecfg, device=device, iterations=ckpt.get("iteration"),
                              train_time_s=ckpt.get("train_time_s"), checkpoint=checkpoint)


def evaluate_folder(predictions: str | Path, data_cfg: DictConfig, out: str | Path, *, experiment: str, seed: int | None = None, workers: int = 1) -> Path:
    """Evaluate a folder of label maps against the test cases of ``data_cfg``; return the summary path."""
    from rmseg.data import load_test_cases

    out = Path(out)
    _check_out(out)
    cases = load_test_cases(data_cfg)
    preds = load_prediction_folder(predictions, [str(c["id"]) for c in cases])
    start = time.perf_counter()
    df = evaluate_predictions(preds, cases, structures=data_cfg["structures"], eval_cfg=eval_config({"workers": workers}))
    write_summary(out, df, summary_meta(data_cfg, experiment=experiment, seed=seed, convention="medpy", iterations=None,
                                        eval_time_s=time.perf_counter() - start, predictions=predictions))
    return out / "summary.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmseg-eval", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint.pt of a run (config read from it)")
    source.add_argument("--predictions", help="folder of <id>.png / <id>.nii.gz label maps")
    parser.add_argument("--data", help="with --predictions: data config name (configs/data/) or YAML file")
    parser.add_argument("--data-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a data config key (e.g. root=/path/to/copy), for --predictions or --checkpoint")
    parser.add_argument("--out", required=True, help="folder for summary.json and per_case.csv")
    parser.add_argument("--experiment", default="predictions", help="experiment name recorded in summary.json")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--save-predictions", choices=("none", "some", "all"), default=None)
    parser.add_argument("--workers", type=int, default=1, help="processes for per-case metrics")
    args = parser.parse_args(argv)
    try:
        if args.checkpoint:
            path = evaluate_checkpoint(args.checkpoint, args.out, device=args.device, save=args.save_predictions,
                                       workers=args.workers, data_overrides=args.data_override)
        else:
            if not args.data:
                parser.error("--predictions needs --data (a configs/data/ name or a YAML file)")
            data_cfg = load_data_config(args.data, args.data_override)
            path = evaluate_folder(args.predictions, data_cfg, args.out, experiment=args.experiment, seed=args.seed, workers=args.workers)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"rmseg-eval: {err}", file=sys.stderr)
        return 2
    for level, line in summary_report(read_summary(path)):
        print(f"{'WARNING: ' if level >= logging.WARNING else ''}{line}", file=sys.stderr if level >= logging.WARNING else sys.stdout)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
