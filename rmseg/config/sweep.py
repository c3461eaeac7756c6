"""``rmseg-train`` command lines: the two experiment sweeps Hydra alone gets wrong, made to work.

- ``experiment=glob(table1/*)``: Hydra lists only the top level of a config group, so its glob finds no
  row in ``configs/experiment/<family>/`` and launches nothing. The glob is expanded here against every
  experiment (``rmseg.config.experiment_names``); a glob matching none is refused.
- ``--multirun experiment=table2/a,table2/b data.patch_size=[64,64,48]``: Hydra composes a sweep's base
  config without the swept ``experiment``, i.e. with the default data (``gs_synthetic``), and applies the
  ``data.`` overrides to it, which fails against the Drishti-GS schema. When every swept row trains on
  one dataset, that ``data=<choice>`` is added (unless given); rows on different datasets together with
  ``data.`` overrides are refused, naming the datasets.

``hydra.launcher.tasks_per_node`` other than 1 is refused too (each task would train the same run).
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob
from hydra.errors import HydraException
from omegaconf import OmegaConf

from rmseg.config.compose import CONFIG_DIR, experiment_names

DEFAULT_DATA = "gs_synthetic"  # configs/config.yaml's data default


def experiment_data(experiment: str) -> str:
    """The ``data`` choice of an experiment file (its ``override /data``, or that of a base config it
    includes such as ``- /table1_base``), else the default."""
    return _data_choice(CONFIG_DIR / "experiment" / f"{experiment}.yaml") or DEFAULT_DATA


def _data_choice(path) -> str | None:
    defaults = OmegaConf.load(path).get("defaults") or []
    for entry in defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for key, value in dict(entry).items():
                if key.replace(" ", "") in ("override/data", "/data"):
                    return str(value)
        elif isinstance(entry, str) and entry != "_self_":  # an included config: absolute, or beside this one
            name = entry.split("@")[0]
            included = CONFIG_DIR / f"{name[1:]}.yaml" if name.startswith("/") else path.parent / f"{name}.yaml"
            if included.is_file() and (choice := _data_choice(included)):
                return choice
    return None


def sweep_arguments(args: Sequence[str]) -> list[str]:
    """``args`` with an experiment glob expanded and, in a multirun over rows of one dataset, its ``data=``
    added (see the module docstring). ValueError for a glob matching nothing or mixed datasets with
    ``data.`` overrides."""
    parser = OverridesParser.create()
    out, rows, multirun = [], None, any(a in ("-m", "--multirun") for a in args)
    for arg in args:
        try:
            override = parser.parse_override(arg) if not arg.startswith("-") else None
        except HydraException:
            override = None  # not an override (e.g. the `job` of `--cfg job`), or a bad one Hydra reports
        if override is not None and override.get_key_element() == "hydra.launcher.tasks_per_node" \
                and str(override.value()) != "1":
            raise ValueError(f"{arg}: rmseg trains one run per process, so every task of a job would train the "
                             "same run; keep tasks_per_node=1 (one job per run) or run torchrun inside one task")
        if override is None or override.get_key_element() != "experiment":
            out.append(arg)
            continue
        value = override.value()
        if isinstance(value, Glob):
            rows = value.filter(experiment_names())
            if not rows:
                raise ValueError(f"{arg} matches no experiment; the rows are configs/experiment/<family>/<row>.yaml, "
                                 "e.g. experiment=glob(table1/*) or experiment=table1/unet,table1/rm20")
            arg = "experiment=" + ",".join(rows)
        elif isinstance(value, ChoiceSweep):
            rows = [str(v) for v in value.list]
        out.append(arg)
    data_given = any(a.split("=", 1)[0] in ("data", "+data") for a in out)
    if multirun and rows and not data_given:
        choices = sorted({experiment_data(r) for r in rows if (CONFIG_DIR / "experiment" / f"{r}.yaml").is_file()})
        if len(choices) == 1:
            out.append(f"data={choices[0]}")
        elif len(choices) > 1 and any(a.startswith("data.") for a in out):
            raise ValueError(f"data.* overrides with experiments on different datasets ({', '.join(choices)}): Hydra "
                             "applies them before choosing each row's data; sweep each dataset's rows separately")
    return out
