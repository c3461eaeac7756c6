"""An installed wheel (not the checkout) composes configs shipped inside the package, and its data/ and
results/ folders resolve from $RMSEG_ROOT or the current directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIP_AT_TOP = {".git", ".venv", "results", "data", "build", "dist", ".pytest_cache"}

PROBE = """
import json, sys
import rmseg
from rmseg.config import CONFIG_DIR, compose_config
from rmseg.data import DATA_DIR
cfg = compose_config(["experiment=table2/rm4"])
print(json.dumps({"rmseg": rmseg.__file__, "configs": str(CONFIG_DIR), "data_dir": cfg.paths.data_dir,
                  "runs_dir": cfg.paths.runs_dir, "data_root": cfg.data.root, "default_data": str(DATA_DIR)}))
"""


@pytest.fixture(scope="module")
def installed(repo_root, tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout, installed without dependencies into a folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(repo_root, source, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n == "__pycache__" or n.endswith(".egg-info")
                                                  or (Path(folder) == repo_root and n in SKIP_AT_TOP)])
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    if build.returncode and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "dist").glob("rmseg-*.whl")
    target = work / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return target


def probe(site: Path, cwd: Path, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RMSEG_ROOT", "RMSEG_DATA_ROOT")}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**environ, "PYTHONPATH": str(site), **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_installed_wheel_composes_its_own_configs(installed, repo_root, tmp_path):
    out = probe(installed, tmp_path)
    assert Path(out["rmseg"]).is_relative_to(installed)
    configs = Path(out["configs"])
    assert configs.is_relative_to(installed) and not configs.is_symlink()
    shipped = sorted(str(p.relative_to(configs)) for p in configs.rglob("*.yaml"))
    assert shipped == sorted(str(p.relative_to(repo_root / "configs")) for p in (repo_root / "configs").rglob("*.yaml"))
    # data/ and results/ from the current directory, the same as in a checkout
    assert (out["data_dir"], out["runs_dir"], out["data_root"]) == ("./data", "./results/runs", "./data/la2018")
    assert Path(out["default_data"]) == Path("data")


def test_rmseg_root_moves_data_and_results_together(installed, tmp_path):
    root = tmp_path / "project"
    out = probe(installed, tmp_path, RMSEG_ROOT=str(root))
    assert (out["data_dir"], out["runs_dir"], out["default_data"]) == (f"{root}/data", f"{root}/results/runs", f"{root}/data")
