"""Training engine on tiny synthetic configs: smoke runs of both tables, kill-and-resume equality,
determinism, run folders, provenance, and bad input (one clear error, no run folder looking complete)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import rmseg.cli.train as train_module
import rmseg.config.checks as config_checks
from rmseg.engine import provenance
from rmseg.config import compose_config
from rmseg.engine.run_dir import claim, run_dir
from rmseg.engine.sampling import ResumableSampler, SeededItems
from rmseg.cli.train import train
from rmseg.config.checks import float16_amp_available
from rmseg.engine.checkpoint import config_differences, load_checkpoint

from conftest import tol

TINY_GS = ["data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]", "data.synthetic.num_train=4",
           "data.synthetic.num_test=2", "data.batch_size=2", "model.channels=[4,8,16]", "model.strides=[2,2]"]
TINY_LA = ["data=la_synthetic", "data.patch_size=[16,16,16]", "data.synthetic.shape=[24,24,16]", "data.synthetic.num_train=2",
           "data.synthetic.num_test=1", "data.num_train=2", "data.batch_size=2", "model.base_filters=2",
           "eval.roi_size=[16,16,16]", "eval.strides=[8,8,8]"]
TRAINER = ["trainer=demo", "trainer.max_iters=4", "trainer.checkpoint_every=2", "trainer.log_every=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Synthetic stand-ins written once for the module."""
    return tmp_path_factory.mktemp("data")


def tiny(experiment: str, results: Path, data_dir: Path, *extra: str):
    family = TINY_GS if experiment.startswith("table1") else TINY_LA
    return compose_config([f"experiment={experiment}", *family, *TRAINER, f"paths.results_dir={results}",
                           f"paths.data_dir={data_dir}", *extra])


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("experiment", ["table1/rm20_02", "table2/rm4"])
def test_smoke_run_writes_a_complete_run_folder(experiment, tmp_path, data_dir):
    final = train(tiny(experiment, tmp_path, data_dir, "trainer.tensorboard=true"))
    assert final == tmp_path / "runs" / experiment / "seed0"
    assert not (final.parent / ".seed0.tmp").exists()
    for name in ("config.yaml", "provenance.json", "train.log", "checkpoint.pt", "summary.json", "per_case.csv",
                 "curve.csv"):
        assert (final / name).is_file(), name
    assert list((final / "tensorboard").iterdir())
    curve = pd.read_csv(final / "curve.csv")
    term = "ResidualMomentLoss"
    assert list(curve.columns) == ["iteration", "lr", "loss", "ce_dice", term, "total", "grad_ce_dice", f"grad_{term}",
                                   f"share_{term}"]
    assert curve["iteration"].tolist() == [1, 2, 3, 4] and (curve[["grad_ce_dice", f"grad_{term}"]] > 0).all().all()
    # the same float64 division of the same written values (repr round-trips)
    assert np.allclose(curve[f"share_{term}"], curve[f"grad_{term}"] / curve["grad_ce_dice"], rtol=tol(torch.float64, ops=2),
                       atol=0)
    summary = json.loads((final / "summary.json").read_text())
    assert (summary["experiment"], summary["seed"], summary["iterations"]) == (experiment, 0, 4)
    structures = {"table1": {"disc", "cup"}, "table2": {"atrium"}}[experiment.split("/")[0]]
    assert {c["structure"] for c in summary["cases"]} == structures
    assert all(0.0 <= c["dice"] <= 1.0 for c in summary["cases"])
    state = torch.load(final / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 4 and state["config"]["name"] == experiment
    log_text = (final / "train.log").read_text()
    assert "iteration 4/4" in log_text
    # the end of the run reports the mean test metrics per structure (and warns on empty predictions)
    assert f"test set: {experiment} seed 0, " in log_text
    assert all(re.search(rf"INFO rmseg.train:   {s} +Dice +\d+\.\d\d  Jaccard", log_text) for s in structures)
    assert len(summary["eval_grid"]) == (2 if experiment.startswith("table1") else 3)
    # rmseg-eval of the run's checkpoint writes the same summary through the same writer: same keys (the
    # data's source included), the same per-case metrics (the model's head, not the loss), both times explicit
    from rmseg.cli.evaluate import evaluate_checkpoint

    evaluated = json.loads(evaluate_checkpoint(final / "checkpoint.pt", tmp_path / "eval").read_text())
    assert list(evaluated) == list(summary) and summary["source"] == evaluated["source"] == "synthetic"
    assert evaluated["cases"] == summary["cases"] and evaluated["protocol"] == summary["protocol"]
    assert summary["train_time_s"] == evaluated["train_time_s"] > 0 and summary["eval_time_s"] > 0
    assert (summary["checkpoint"], evaluated["checkpoint"]) == (None, str(final / "checkpoint.pt"))


def test_same_seed_gives_identical_weights_and_metrics_other_seed_does_not(tmp_path, data_dir):
    runs = [train(tiny("table1/rm20", tmp_path / f"r{i}", data_dir, f"seed={s}")) for i, s in enumerate((0, 0, 1))]
    assert_same_weights(final_weights(runs[0]), final_weights(runs[1]))
    cases = [json.loads((r / "summary.json").read_text())["cases"] for r in runs]
    assert cases[0] == cases[1]
    assert any(not torch.equal(a, b) for a, b in zip(final_weights(runs[0]).values(), final_weights(runs[2]).values()))


def test_loader_workers_do_not_change_the_batches(tmp_path, data_dir):
    """Augmentations are seeded per sample position, so worker processes draw the same patches."""
    serial = train(tiny("table2/rm3", tmp_path / "a", data_dir))
    workers = train(tiny("table2/rm3", tmp_path / "b", data_dir, "data.num_workers=2"))
    assert_same_weights(final_weights(serial), final_weights(workers))


def _signal_at_first_checkpoint(monkeypatch, signum: int = signal.SIGTERM):
    """Deliver ``signum`` to this process right after the first periodic checkpoint is written."""
    real_save = train_module.save_checkpoint
    calls = []

    def save_then_signal(path, state):
        real_save(path, state)
        calls.append(state["iteration"])
        if len(calls) == 1:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_signal)
    return calls


@pytest.mark.parametrize("experiment, signum", [
    pytest.param("table1/rm20", signal.SIGTERM, id="table1-SIGTERM"),
    pytest.param("table2/rm3", signal.SIGTERM, id="table2-SIGTERM"),
    pytest.param("table1/rm20", signal.SIGINT, id="table1-SIGINT"),  # Ctrl-C: the same checkpoint and resume
])
def test_kill_and_resume_reaches_the_same_final_weights(experiment, signum, tmp_path, data_dir, monkeypatch):
    extra = ("trainer.max_iters=4", "trainer.checkpoint_every=2")
    uninterrupted = train(tiny(experiment, tmp_path / "a", data_dir, *extra))

    calls = _signal_at_first_checkpoint(monkeypatch, signum)
    name = signal.Signals(signum).name
    with pytest.raises(KeyboardInterrupt, match=f"{name}: run interrupted at iteration 2") as stop:
        train(tiny(experiment, tmp_path / "b", data_dir, *extra))
    assert stop.value.signum == signum  # rmseg-train exits with 128 + signum
    assert calls == [2, 2]  # the periodic checkpoint, then the one taken on the signal
    interrupted = run_dir(tmp_path / "b" / "runs", experiment, 0)
    assert interrupted.checkpoint.is_file() and not interrupted.final.exists()
    monkeypatch.undo()

    with pytest.raises(FileExistsError, match="pass resume=true"):
        train(tiny(experiment, tmp_path / "b", data_dir, *extra))
    resumed = train(tiny(experiment, tmp_path / "b", data_dir, *extra, "resume=true"))
    assert resumed == interrupted.final
    assert_same_weights(final_weights(uninterrupted), final_weights(resumed))
    a, b = (json.loads((r / "summary.json").read_text())["cases"] for r in (uninterrupted, resumed))
    assert a == b
    assert "resumed" in (resumed / "train.log").read_text()
    # the curve holds each iteration once, as the uninterrupted run's
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "curve.csv"), pd.read_csv(uninterrupted / "curve.csv"))


def test_resume_with_a_different_config_lists_the_keys(tmp_path, data_dir, monkeypatch):
    _signal_at_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("table1/rm20", tmp_path, data_dir))
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"config differs .* loss.alpha: 1.0 -> 0.5; optim.lr: 0.001 -> 0.01"):
        train(tiny("table1/rm20", tmp_path, data_dir, "resume=true", "loss.alpha=0.5", "optim.lr=0.01"))
    assert not run_dir(tmp_path / "runs", "table1/rm20", 0).final.exists()


def test_corrupt_or_foreign_checkpoint_fails_clearly(tmp_path, data_dir):
    run = run_dir(tmp_path / "runs", "table1/rm20", 0)
    run.tmp.mkdir(parents=True)
    run.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is corrupt, unreadable.*: delete .*to start over"):
        train(tiny("table1/rm20", tmp_path, data_dir, "resume=true"))
    torch.save({"model": {}}, run.checkpoint)
    with pytest.raises(ValueError, match="is not an rmseg checkpoint"):
        train(tiny("table1/rm20", tmp_path, data_dir, "resume=true"))
    assert not run.final.exists()


def test_checkpoint_of_another_model_fails_clearly(tmp_path, data_dir, monkeypatch):
    _signal_at_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("table1/rm20", tmp_path, data_dir))
    monkeypatch.undo()
    run = run_dir(tmp_path / "runs", "table1/rm20", 0)
    state = torch.load(run.checkpoint, weights_only=True)
    state["model"] = {"weight": torch.zeros(1)}
    torch.save(state, run.checkpoint)
    with pytest.raises(ValueError, match="does not fit this model"):
        train(tiny("table1/rm20", tmp_path, data_dir, "resume=true"))
    assert not run.final.exists()


def test_completed_run_is_skipped_or_fails_never_overwritten(tmp_path, data_dir):
    final = train(tiny("table1/unet", tmp_path, data_dir))
    before = (final / "checkpoint.pt").read_bytes()
    assert train(tiny("table1/unet", tmp_path, data_dir)) is None
    with pytest.raises(FileExistsError, match="already complete .*on_exists=fail"):
        train(tiny("table1/unet", tmp_path, data_dir, "on_exists=fail"))
    # the same folder asked for with another config is refused, naming the keys; where the data lies is free
    with pytest.raises(ValueError, match=r"made with another config: loss.lambda_dice: 1.0 -> 0.5.*name=<new name>"):
        train(tiny("table1/unet", tmp_path, data_dir, "loss.lambda_dice=0.5"))
    assert train(tiny("table1/unet", tmp_path, data_dir, f"data.root={tmp_path}/moved")) is None
    assert (final / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    "extra, error, match",
    [(("trainer.max_iters=-3",), ValueError, "trainer.max_iters=-3"),
     (("loss.terms=[{_target_: rmseg.losses.ResidualMomentLoss, orders: [[2, 0, 0]]}]",), ValueError, "data 'gs' is 2D"),
     (("data=gs", "data.root=/nonexistent/drishti"), FileNotFoundError, "/nonexistent/drishti"),
     (("name=../outside",), ValueError, "must be a relative path")],
)
def test_bad_input_fails_before_any_run_folder(extra, error, match, tmp_path, data_dir):
    with pytest.raises(error, match=match):
        train(tiny("table1/rm20", tmp_path, data_dir, *extra))
    assert not (tmp_path / "runs").exists()


def test_config_differences_ignore_free_keys_and_show_absent_ones():
    saved = {"seed": 0, "resume": False, "paths": {"results_dir": "a"}, "loss": {"alpha": 1.0}}
    current = {"seed": 1, "resume": True, "paths": {"results_dir": "b"}, "loss": {"alpha": 1.0, "extra": 2}}
    assert config_differences(saved, current) == ["loss.extra: '<absent>' -> 2", "seed: 0 -> 1"]


class Crafted:
    """An object a pickle would rebuild by calling code: ``weights_only`` loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo crafted checkpoint ran code",))


def test_checkpoints_are_read_without_running_code_and_checked(tmp_path):
    from rmseg.engine.checkpoint import FORMAT, read_checkpoint, save_checkpoint
    from rmseg.cli.evaluate import evaluate_checkpoint

    with pytest.raises(ValueError, match="does not exist: delete"):
        load_checkpoint(tmp_path / "checkpoint.pt", {})
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": FORMAT, "model": {}, "config": {}, "payload": Crafted()}, crafted)
    for read in (read_checkpoint, lambda p: evaluate_checkpoint(p, tmp_path / "out")):
        with pytest.raises(ValueError, match="holds more than tensors and plain containers"):
            read(crafted)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(ValueError, match="is not an rmseg checkpoint"):
        read_checkpoint(foreign)
    save_checkpoint(tmp_path / "ok.pt", {"model": {"w": torch.ones(2)}, "config": {"seed": 1}})
    state = read_checkpoint(tmp_path / "ok.pt")
    assert state["format"] == FORMAT and torch.equal(state["model"]["w"], torch.ones(2))
    assert not (tmp_path / "ok.pt.tmp").exists()


def test_sampler_resumes_mid_stream_and_visits_each_case_once_per_epoch():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(ResumableSampler(5, seed=3), 17)
    assert take(ResumableSampler(5, seed=3, start=7), 10) == full[7:]
    assert [p for _, p in full] == list(range(17))
    for epoch in range(3):
        assert sorted(i for i, _ in full[5 * epoch: 5 * epoch + 5]) == [0, 1, 2, 3, 4]
    assert take(ResumableSampler(5, seed=4), 17) != full
    with pytest.raises(ValueError, match="training set is empty"):
        ResumableSampler(0, seed=0)


def test_seeded_items_draw_from_the_position_and_restore_global_rngs():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return (i, float(np.random.rand()), float(torch.rand(())))

    items = SeededItems(Noisy(), seed=0)
    torch.manual_seed(1)
    np.random.seed(1)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    first = items[(1, 5)]
    assert items[(1, 5)] == first and items[(1, 6)] != first
    assert torch.equal(torch.get_rng_state(), before[0]) and (np.random.get_state()[1] == before[1]).all()


def test_claim_refuses_an_interrupted_run_without_resume(tmp_path):
    run = run_dir(tmp_path, "table1/rm20", 2)
    assert run.tmp == tmp_path / "table1" / "rm20" / ".seed2.tmp"
    assert claim(run, on_exists="skip", resume=False) and run.tmp.is_dir()
    with pytest.raises(FileExistsError, match="resume=true"):
        claim(run, on_exists="skip", resume=False)
    with pytest.raises(ValueError, match="seed=-1"):
        run_dir(tmp_path, "x", -1)


def test_provenance_records_commit_diff_packages_and_machine():
    info = provenance.collect()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.REPO_ROOT, capture_output=True, text=True)
    assert info["commit"] == head.stdout.strip()
    assert isinstance(info["diff"], str) and isinstance(info["dirty"], bool)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0] or info["packages"]["torch"] == torch.__version__
    assert info["machine"]["python"] == sys.version.split()[0]
    # which CPU, and whether it has bfloat16 units: what decides if the cpu protocol's bf16 autocast is fast
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    expected = None if flags is None else ("avx512_bf16" in flags.split() or "amx_bf16" in flags.split())
    assert info["machine"]["cpu_bf16"] == expected and isinstance(info["machine"]["cpu_model"], str)


def test_provenance_diff_covers_the_whole_checkout_but_run_records(tmp_path, monkeypatch):
    assert (provenance.REPO_ROOT / "pyproject.toml").is_file()  # the checkout's root, not a package folder
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                                    capture_output=True)
    git("init", "-q")
    (tmp_path / "rmseg").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "rmseg" / "loss.py").write_text("a = 1\n")
    (tmp_path / "results" / "summary.json").write_text("{}\n")
    git("add", ".")
    git("commit", "-qm", "start")
    (tmp_path / "rmseg" / "loss.py").write_text("a = 2\n")
    (tmp_path / "results" / "summary.json").write_text('{"dice": 1}\n')
    (tmp_path / "rmseg" / "new.py").write_text("")
    (tmp_path / "results" / "new.json").write_text("")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    state = provenance.git_state()
    assert "rmseg/loss.py" in state["diff"] and "+a = 2" in state["diff"] and "results/" not in state["diff"]
    assert state["untracked"] == ["rmseg/new.py"] and state["dirty"] is True
    (tmp_path / "rmseg" / "loss.py").write_text("a = 1\n")
    (tmp_path / "rmseg" / "new.py").unlink()
    assert provenance.git_state()["dirty"] is False  # changed run records alone leave the code clean


def test_bf16_autocast_runs_on_cpu(tmp_path, data_dir):
    final = train(tiny("table1/rm20", tmp_path, data_dir, "trainer.amp=true", "trainer.max_iters=2"))
    assert OmegaConf.load(final / "config.yaml").trainer.amp is True


def test_float16_autocast_runs_with_a_grad_scaler(tmp_path, data_dir, monkeypatch):
    """float16 autocast with the device's GradScaler: on CPU where this PyTorch supports it (2.3+), else CUDA."""
    device = "cpu" if float16_amp_available("cpu") else "cuda" if torch.cuda.is_available() else None
    if device is None:
        pytest.skip("this PyTorch has no float16 autocast/GradScaler on CPU and there is no CUDA device")
    fp16 = ("trainer.amp=true", "trainer.amp_dtype=float16", "trainer.max_iters=2", f"trainer.device={device}")
    final = train(tiny("table1/rm20", tmp_path, data_dir, *fp16))
    trainer = OmegaConf.load(final / "config.yaml").trainer
    assert (trainer.amp, trainer.amp_dtype) == (True, "float16")
    scaler = torch.load(final / "checkpoint.pt", map_location="cpu", weights_only=True)["scaler"]
    assert scaler["scale"] > 0  # an enabled scaler saves its state; a disabled one saves {}
    summary = json.loads((final / "summary.json").read_text())
    assert all(0.0 <= c["dice"] <= 1.0 for c in summary["cases"])

    monkeypatch.setattr(config_checks, "float16_amp_available", lambda device_type: False)
    with pytest.raises(ValueError, match="amp_dtype=float16 needs a CUDA device"):
        train(tiny("table1/rm20", tmp_path / "unsupported", data_dir, *fp16))
    assert not (tmp_path / "unsupported").exists()


def test_progress_bar_shows_loss_iterations_and_eta(tmp_path, data_dir, capsys):
    train(tiny("table1/rm20", tmp_path, data_dir, "trainer.progress_bar=true"))
    err = capsys.readouterr().err  # tqdm writes to stderr; its last refresh is the closed bar
    assert re.search(r"table1/rm20: 100%.*\| 4/4 \[\d+:\d\d<\d+:\d\d", err), err  # count, elapsed<remaining
    assert re.search(r"it/s, loss=\d+\.\d{4}, lr=0\.001\]", err), err


def test_make_demo_command_runs_both_tables_end_to_end(tmp_path, repo_root):
    """The demo exactly as ``make demo`` runs it (``python -m rmseg.cli.demo``, default rows and iterations),
    only its folders moved into ``tmp_path``; a second call skips every completed run."""
    from rmseg.config import experiment_names

    command = [sys.executable, "-m", "rmseg.cli.demo", "--results", str(tmp_path / "results"),
               "--data-dir", str(tmp_path / "data")]
    first = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    for family in ("table1", "table2"):
        assert (tmp_path / "results" / "tables" / f"{family}.md").is_file()
        for experiment in experiment_names(family):
            assert (tmp_path / "results" / "runs" / experiment / "seed0" / "summary.json").is_file()
            row = experiment.split("/")[1]
            # the row's measured line (marked * for synthetic data) has numbers in its metric columns
            numbers = rf"^\| {row} \S* ?\| rmseg \|( \d+\.\d\d \(\d+\.\d\d; —\) \|){{4}}"
            assert any(re.match(numbers, line) for line in first.stdout.splitlines()), row
    second = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("skipped (complete)") == len(experiment_names("table1")) + len(experiment_names("table2"))


@pytest.mark.slow
@pytest.mark.realdata
def test_table2_row_trains_and_evaluates_on_the_real_la_data(shared_data, tmp_path):
    """The paper's Table 2 config on the real LA release (2 training volumes, 2 iterations, tiny V-Net):
    all 20 test volumes of the protocol are evaluated by sliding window."""
    cfg = compose_config([
        "experiment=table2/rm4", f"data.root={shared_data / 'la2018'}", "data.num_train=2", "data.batch_size=2",
        "data.patch_size=[64,64,32]", "data.cache=false", "model.base_filters=2", "trainer=demo", "trainer.max_iters=2",
        "eval.strides=[56,56,40]", "eval.save_predictions=none", f"paths.results_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
    ])
    final = train(cfg)
    summary = json.loads((final / "summary.json").read_text())
    assert (summary["dataset"], summary["source"]) == ("la", "real")
    assert len({c["id"] for c in summary["cases"]}) == 20
    assert all(c["n_ref"] > 0 for c in summary["cases"])


@pytest.mark.parametrize("target, missing", [("reproduce-gs", "drishti-gs1/"), ("reproduce-la", "la2018/"),
                                             ("reproduce-extended", "drishti-gs1/"), ("reproduce-small", "drishti-gs1/")])
def test_reproduce_without_data_says_to_run_make_data(target, missing, tmp_path, repo_root):
    if not (repo_root / ".venv" / ".rmseg-setup-stamp").exists():
        pytest.skip("make set-up has not run in this checkout (the target would install first)")
    command = ["make", "-s", target, f"DATA={tmp_path}"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"no {missing} under DATA={tmp_path}" in proc.stdout and "make data" in proc.stdout
    if target in ("reproduce-extended", "reproduce-small"):  # both datasets are needed: the missing one is named
        (tmp_path / "drishti-gs1").mkdir()
        proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
        assert proc.returncode != 0 and f"no la2018/ under DATA={tmp_path}" in proc.stdout and "make data" in proc.stdout


def test_cli_multirun_sweeps_experiments_and_seeds(tmp_path, data_dir, repo_root):
    """``rmseg-train -m`` as ``make reproduce-gs`` calls it (2 rows x 2 seeds, tiny), every folder in tmp_path."""
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    command = [sys.executable, "-m", "rmseg.cli.train", "-m", "experiment=table1/unet,table1/rm20", "seed=0,1",
               *TINY_GS, *TRAINER, "trainer.max_iters=2", f"paths.results_dir={results}",
               f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for experiment in ("table1/unet", "table1/rm20"):
        for seed in (0, 1):
            summary = json.loads((results / "runs" / experiment / f"seed{seed}" / "summary.json").read_text())
            assert (summary["experiment"], summary["seed"], summary["iterations"]) == (experiment, seed, 2)
    for row in ("table1/unet", "table1/rm20"):  # complete folders only, no .seed<k>.tmp left behind
        assert sorted(p.name for p in (results / "runs" / row).iterdir()) == ["seed0", "seed1"]
    assert (sweep / "multirun.yaml").is_file() and not (results / "tmp").exists()


# ---------------------------------------------------------------- speed switches


def _record_training(monkeypatch, model_hook: bool = True) -> dict[str, list]:
    """Per training iteration: the loss and, with ``model_hook``, what the model sees in its forward pass
    (input batch, 4D/5D parameters, cuDNN flags). ``model_hook=False`` for a compiled model."""
    seen: dict[str, list] = {"losses": [], "inputs": [], "weights": [], "cudnn": []}
    real_model, real_loss = train_module.build_model, train_module.build_loss

    def pre_hook(module, args):
        if module.training:
            seen["inputs"].append(args[0])
            seen["weights"].append([p for p in module.parameters() if p.dim() >= 4])
            seen["cudnn"].append((torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic))

    def build_model(*args):
        model = real_model(*args)
        if model_hook:
            model.register_forward_pre_hook(pre_hook)
        return model

    def build_loss(*args):
        loss_fn = real_loss(*args)
        loss_fn.register_forward_hook(lambda module, args, out: seen["losses"].append(out.item()))
        return loss_fn

    monkeypatch.setattr(train_module, "build_model", build_model)
    monkeypatch.setattr(train_module, "build_loss", build_loss)
    return seen


def max_rel_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


# Table 2's own base objective pools a squared-denominator Dice over the batch; on these 16^3 synthetic patches,
# some with little foreground, its gradient amplifies rounding differences without bound, so the LA case is
# compared under the plain CE + Dice (the memory format is what is tested, not the objective).
PLAIN_BASE = ("loss.lambda_ce=1.0", "loss.lambda_dice=1.0", "loss.include_background_dice=true",
              "loss.dice_squared=false", "loss.dice_batch=false")


@pytest.mark.parametrize("experiment, fmt, extra", [("table1/rm20", torch.channels_last, ()),
                                                    ("table2/rm4", torch.channels_last_3d, PLAIN_BASE)])
def test_channels_last_trains_in_that_format_along_the_default_curve(experiment, fmt, extra, tmp_path, data_dir,
                                                                     monkeypatch):
    default = _record_training(monkeypatch)
    cfg = tiny(experiment, tmp_path / "default", data_dir, *extra)
    train(cfg)
    monkeypatch.undo()
    fast = _record_training(monkeypatch)
    final = train(tiny(experiment, tmp_path / "fast", data_dir, *extra, "trainer.channels_last=true"))
    assert len(fast["weights"]) == len(fast["losses"]) == 4  # one forward pass per iteration
    for weights, image in zip(fast["weights"], fast["inputs"]):
        assert all(w.is_contiguous(memory_format=fmt) for w in weights)
        assert any(not w.is_contiguous() for w in weights)  # really converted, not both at once
        assert image.is_contiguous(memory_format=fmt)
    assert all(w.is_contiguous() for ws in default["weights"] for w in ws)
    assert not any(w.is_contiguous(memory_format=fmt) and not w.is_contiguous()
                   for ws in default["weights"] for w in ws)
    # same batches, weights and (channel-wise Dropout3d) dropout masks: only the convolutions' summation order
    # differs. Rounding of a float32 sum of N terms grows as eps * sqrt(N) (random-walk model); the longest sums
    # are the weight gradients over batch x voxels, and each iteration adds its share of the difference.
    spatial = cfg.data.image_size if experiment.startswith("table1") else cfg.data.patch_size
    longest_sum = cfg.data.batch_size * math.prod(spatial)
    bound = cfg.trainer.max_iters * torch.finfo(torch.float32).eps * math.sqrt(longest_sum)
    assert max_rel_diff(fast["losses"], default["losses"]) < bound
    assert (final / "summary.json").is_file()


def _compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot train here (a tiny forward and backward pass), or None if it can."""
    try:
        torch.compile(torch.nn.Linear(2, 1))(torch.ones(1, 2)).sum().backward()
    except Exception as err:  # noqa: BLE001 - any failure of the probe means: not on this platform
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


@pytest.mark.slow
def test_compile_trains_along_the_plain_curve_and_resumes_uncompiled(tmp_path, data_dir, monkeypatch):
    """Compiled for 2 iterations, interrupted, resumed uncompiled for the 3rd: the checkpoint holds the
    plain module's keys (rmseg-eval reads it), and losses and weights follow the uncompiled run."""
    why = _compile_unavailable()
    if why is not None:
        pytest.skip(f"torch.compile does not run on this platform ({why})")
    from torch._dynamo.utils import counters

    from rmseg.cli.evaluate import evaluate_checkpoint

    extra = ("model.channels=[2,4]", "model.strides=[2]", "trainer.max_iters=3", "trainer.checkpoint_every=2")
    plain = _record_training(monkeypatch)
    reference = train(tiny("table1/rm20", tmp_path / "plain", data_dir, *extra))
    monkeypatch.undo()

    compiled = _record_training(monkeypatch, model_hook=False)
    real_compile, compile_calls = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_calls.append(model) or real_compile(model, **kw))
    graphs = counters["stats"]["unique_graphs"]
    _signal_at_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt, match="interrupted at iteration 2"):
        train(tiny("table1/rm20", tmp_path / "run", data_dir, *extra, "trainer.compile=true"))
    monkeypatch.undo()
    assert len(compile_calls) == 1 and counters["stats"]["unique_graphs"] > graphs  # the forward ran compiled
    checkpoint = run_dir(tmp_path / "run" / "runs", "table1/rm20", 0).checkpoint
    keys = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"].keys()
    assert not [k for k in keys if "_orig_mod." in k] and keys == final_weights(reference).keys()
    assert evaluate_checkpoint(checkpoint, tmp_path / "eval").is_file()

    resumed_losses = _record_training(monkeypatch)["losses"]
    final = train(tiny("table1/rm20", tmp_path / "run", data_dir, *extra, "resume=true"))  # compile=false
    assert len(compiled["losses"]) == 2 and len(resumed_losses) == 1
    # inductor reorders the float32 sums over the batch's 2 x 32 x 32 pixels (CE mean, Dice sums) in any order;
    # a weight moves by updates smaller than itself, so its difference stays within that relative to the tensor
    bound = tol(torch.float32, 2 * 32 * 32)
    assert max_rel_diff(compiled["losses"] + resumed_losses, plain["losses"]) < bound
    for key, value in final_weights(reference).items():
        torch.testing.assert_close(final_weights(final)[key], value, rtol=bound, atol=bound * value.abs().max().item(),
                                   msg=key)


@pytest.mark.parametrize("enabled", [True, False])
def test_cudnn_benchmark_is_set_for_the_run_and_restored_after(enabled, tmp_path, data_dir, monkeypatch, caplog):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    seen = _record_training(monkeypatch)
    train(tiny("table1/rm20", tmp_path, data_dir, f"trainer.cudnn_benchmark={str(enabled).lower()}",
               "trainer.max_iters=2"))
    # on: autotuning with non-deterministic algorithms allowed; off: set_determinism's deterministic cuDNN
    assert seen["cudnn"] == [(enabled, not enabled)] * 2
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, False)
    assert ("cudnn_benchmark=true has no effect on cpu" in caplog.text) == enabled


@pytest.mark.parametrize("key", ["channels_last", "cudnn_benchmark", "compile"])
def test_speed_switch_with_a_bad_value_fails_at_composition_naming_it(key, tmp_path, data_dir):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        tiny("table1/rm20", tmp_path, data_dir, f"trainer.{key}=maybe")
    message = str(err.value) + str(err.value.__cause__)
    assert f"trainer.{key}" in message and "'maybe'" in message and "bool" in message.lower()


def test_speed_switches_may_change_on_resume_amp_may_not():
    saved = {"trainer": {"amp": False, "channels_last": False, "cudnn_benchmark": False, "compile": True}}
    current = {"trainer": {"amp": True, "channels_last": True, "cudnn_benchmark": True, "compile": False}}
    assert config_differences(saved, current) == ["trainer.amp: False -> True"]
    assert config_differences({"trainer": {}}, {"trainer": {"compile": False}}) == []  # checkpoints from before them


def test_curve_log_keeps_rows_up_to_the_resumed_iteration(tmp_path):
    from rmseg.engine.curve import CurveLog, gradient_shares

    log = CurveLog(tmp_path / "curve.csv")
    for it in (10, 20, 30):
        log.append({"iteration": it, "loss": 1.0 / it})
    resumed = CurveLog(tmp_path / "curve.csv", resume_from=20)  # checkpoint at 20, crash after 30
    resumed.append({"iteration": 30, "loss": 0.5})
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve["iteration"].tolist() == [10, 20, 30] and curve["loss"].tolist() == [0.1, 0.05, 0.5]
    with pytest.raises(ValueError, match="differ from"):
        resumed.append({"iteration": 40})
    assert gradient_shares({"ce_dice": 2.0, "ResidualMomentLoss": 0.5}) == {"share_ResidualMomentLoss": 0.25}
    assert gradient_shares({"SignedDistanceLoss": 1.0}) == {}
