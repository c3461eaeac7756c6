"""The GPU check's driver: the CPU dry run of scripts/gpu_check.sh end to end (every step on tiny sizes), and
its parts on hand-made inputs (log parsing, estimates, restoring the benchmark reports, clear errors)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import check

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTS = {"gpu_check.md", "gpu_check.json", "benchmarks.json", "logs.md"}


def gpu_check(tmp_path: Path, *args: str, out: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "RMSEG_GPU_BUNDLE": str(tmp_path / "no-bundle"),
           "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    if out:
        env["OUT"] = str(tmp_path / "out")
    return subprocess.run(["scripts/gpu_check.sh", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_on_the_cpu_runs_every_step_and_writes_the_reports(tmp_path):
    proc = gpu_check(tmp_path, "--device", "cpu", "--tiny")
    out = tmp_path / "out"
    summary = (out / "gpu_check.md").read_text() if (out / "gpu_check.md").is_file() else ""
    assert proc.returncode == 0, summary[:3000] + proc.stdout[-1500:] + proc.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert names == REPORTS and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)  # what a device call returns
    result = json.loads((out / "gpu_check.json").read_text())
    assert list(result["steps"]) == ["setup", *check.STEPS]
    statuses = [step["status"] for step in result["steps"].values()]
    assert all("done" in s and not re.search(r"error|failed|time box|skipped|cut", s) for s in statuses), statuses
    tests = result["tests"]["counts"]
    assert tests.get("failed", 0) == 0 and tests.get("error", 0) == 0
    assert tests.get("passed" if torch.cuda.is_available() else "skipped", 0) > 0  # on the CPU: "no CUDA" skips
    reports = json.loads((out / "benchmarks.json").read_text())
    assert set(reports) == {"training", "inference", "rm_loss", "time_to_table"}
    assert all(r["md"].strip() and "machine" in r["json"] for r in reports.values())
    for setting in ("table1", "table2"):
        table = result["tables"][setting]
        assert set(table["runs"]) == {table["variant"], "fp32"}
        assert all(run["complete"] and run["rc"] == 0 and run["s_per_iter"] > 0 for run in table["runs"].values())
        assert result["curves"][setting]["logged_iterations"] == 4 and "passes" in result["curves"][setting]
    packing = result["packing"]["table1"]
    assert packing["runs"] == 2 and packing["gain"] > 0 and len(packing["packed_s_per_iter"]) == 2
    estimates = {(e["table"], e["variant"]): e for e in result["estimates"]}
    assert {t for t, _ in estimates} == {"table1", "table2"}
    for (table, _), e in estimates.items():
        assert e["runs"] == {"table1": 7, "table2": 6}[table] * 3 and e["sequential_min"] > 0
    markdown = (out / "gpu_check.md").read_text()
    for heading in ("## Steps", "## CUDA tests", "## Whole runs against fp32", "## Packing", "## Time to the tables"):
        assert heading in markdown
    logs = (out / "logs.md").read_text()
    assert "rmseg.cli.train" in logs and "benchmarks.training" in logs and "pytest" in logs


def test_errors_name_the_missing_piece(tmp_path):
    no_out = gpu_check(tmp_path, "--device", "cpu", "--tiny", out=False, timeout=60)
    assert no_out.returncode != 0 and "set OUT" in no_out.stderr
    cpu_full = subprocess.run([sys.executable, "-m", "benchmarks.gpu.check", "--out", str(tmp_path), "--device", "cpu"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert cpu_full.returncode == 2 and "add --tiny" in cpu_full.stderr
    if not torch.cuda.is_available():
        no_gpu = subprocess.run([sys.executable, "-m", "benchmarks.gpu.check", "--out", str(tmp_path)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert no_gpu.returncode != 0 and "torch sees no CUDA device" in no_gpu.stderr
    with pytest.raises(FileNotFoundError, match="make gpu-bundle"):
        from benchmarks.gpu.bundle import unpack

        unpack(tmp_path / "absent", tmp_path / "data")


def write_log(folder: Path, lines: list[tuple[str, str]]) -> None:
    """``train.log`` with ``lines`` and the ``curve.csv`` of its ``iteration N/M loss X`` lines, as a run writes them."""
    folder.mkdir(parents=True)
    (folder / "train.log").write_text("".join(f"2026-11-30 {t} INFO rmseg.train: {m}\n" for t, m in lines))
    rows = [m.split()[1].split("/")[0] + ",0.001," + m.split()[3] for _, m in lines if m.startswith("iteration ")]
    (folder / "curve.csv").write_text("iteration,lr,loss\n" + "".join(r + "\n" for r in rows))


def test_an_unfinished_run_gives_its_pace_from_the_log_and_partial_curves(tmp_path):
    ref, var = tmp_path / "ref" / "seed0", tmp_path / "var" / "seed0"
    write_log(ref.parent / ".seed0.tmp", [("10:00:00,000", "run table1/rm20: {}"),
                                          ("10:00:05,000", "iteration 10/2000 loss 1.00000 {} lr 0.001"),
                                          ("10:00:15,000", "iteration 20/2000 loss 0.80000 {} lr 0.001"),
                                          ("10:00:25,000", "iteration 30/2000 loss 0.50000 {} lr 0.001")])
    write_log(var.parent / ".seed0.tmp", [("10:00:00,000", "run table1/rm20: {}"),
                                          ("10:00:02,000", "iteration 10/2000 loss 1.10000 {} lr 0.001"),
                                          ("10:00:04,000", "iteration 20/2000 loss 0.80000 {} lr 0.001")])
    run = check.parse_run(ref)
    assert not run["complete"] and run["last_logged_iteration"] == 30
    assert run["s_per_iter_log"] == pytest.approx(1.0) and run["logged_s"] == pytest.approx(25.0)
    assert check.run_estimate(run, 40.0, "table1")["train_s"] == pytest.approx(2000.0)
    curve = check.partial_curve(ref, var)
    assert curve["logged_iterations"] == 2 and curve["curve_max_rel_diff"] == pytest.approx(0.1)
    assert curve["passes"] is None  # no verdict without the test Dice of both runs


def test_a_finished_run_is_extrapolated_to_the_protocol(tmp_path):
    run_dir = tmp_path / "seed0"
    write_log(run_dir, [("10:00:00,000", "run table2/rm4: {}"),
                        ("10:00:10,000", "iteration 100/200 loss 0.5 {} lr 0.01"),
                        ("10:00:20,000", "iteration 200/200 loss 0.4 {} lr 0.01"),
                        ("10:00:20,500", "training done: 200 iterations in 20.0 s"),
                        ("10:00:26,500", "run complete: x")])
    cases = [{"id": f"c{i}", "structure": "atrium", "dice": 0.9} for i in range(5)]
    (run_dir / "summary.json").write_text(json.dumps({"iterations": 200, "wall_time_s": 20.0, "cases": cases}))
    run = check.parse_run(run_dir)
    assert run["complete"] and run["s_per_iter"] == pytest.approx(0.1) and run["eval_s"] == pytest.approx(6.0)
    est = check.run_estimate(run, 36.5, "table2")  # 10 s outside the logged 26.5 s: start-up
    assert est["startup_s"] == pytest.approx(10.0) and est["train_s"] == pytest.approx(600.0)
    assert est["eval_s"] == pytest.approx(6.0 * 20 / 5)  # scaled to the protocol's 20 test cases
    assert est["run_s"] == pytest.approx(10.0 + 600.0 + 24.0)


def test_restore_writes_the_reports_into_results_and_archives_the_old_ones(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "benchmarks.json").write_text(json.dumps({"inference": {"md": "# GPU\n", "json": {"x": 1}}}))
    results = tmp_path / "results"
    results.mkdir()
    (results / "inference.md").write_text("# CPU\n")
    (results / "inference.json").write_text("{}")
    written = check.restore(tmp_path / "out", results)
    assert sorted(p.name for p in written) == ["inference.json", "inference.md"]
    assert (results / "inference.md").read_text() == "# GPU\n" and json.loads((results / "inference.json").read_text()) == {"x": 1}
    assert sorted(p.suffix for p in (results / "archive").iterdir()) == [".json", ".md"]
