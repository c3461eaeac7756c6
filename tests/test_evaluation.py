"""Evaluation: sliding-window strides and averaging, per-case rows, summary.json, prediction files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from rmseg.engine.checkpoint import save_checkpoint
from rmseg.evaluation import (
    EvalConfig,
    eval_config,
    evaluate_model,
    evaluate_predictions,
    ids_to_save,
    load_prediction,
    load_prediction_folder,
    predict_probabilities,
    read_summary,
    save_prediction,
    sliding_window_overlap,
    write_summary,
)

from conftest import tol

STRUCTURES = {"disc": [1, 2], "cup": [2]}


@pytest.mark.parametrize("shape", [(148, 132, 88), (244, 160, 88), (112, 112, 80), (100, 130, 88)])
def test_overlap_gives_uamt_window_starts(shape):
    roi, strides = (112, 112, 80), (18, 18, 4)
    overlap = sliding_window_overlap(roi, strides)
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    interval = _get_scan_interval(padded, roi, 3, overlap)
    starts = {tuple(sl.start for sl in sls) for sls in dense_patch_slices(padded, roi, interval)}
    # UA-MT test_single_case: n = ceil((size - roi) / stride) + 1, start_i = min(stride * i, size - roi)
    expected_axes = [
        [min(st * i, n - r) for i in range(math.ceil((n - r) / st) + 1)] for n, r, st in zip(padded, roi, strides)
    ]
    expected = {(a, b, c) for a in expected_axes[0] for b in expected_axes[1] for c in expected_axes[2]}
    assert starts == expected


class WindowRamp(torch.nn.Module):
    """Logits: channel 0 = 0, channel 1 = input + a ramp over the window's three axes (position-dependent)."""

    def __init__(self, roi):
        super().__init__()
        i, j, k = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in roi), indexing="ij")
        self.register_buffer("ramp", i / 4 + j / 3 - k / 5)

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x + self.ramp], dim=1)


def test_sliding_window_averages_probabilities_like_uamt_loop():
    roi, strides = (6, 6, 4), (3, 2, 2)
    image = torch.randn(1, 10, 9, 7, generator=torch.Generator().manual_seed(0))
    model = WindowRamp(roi)
    cfg = EvalConfig(roi_size=list(roi), strides=list(strides), sw_batch_size=3)
    probs = predict_probabilities(model, image, eval_cfg=cfg)
    # independent loop in the manner of UA-MT's test_single_case: sum softmax over windows, divide by count
    score = torch.zeros(2, 10, 9, 7)
    count = torch.zeros(10, 9, 7)
    starts = [
        [min(st * i, n - r) for i in range(math.ceil((n - r) / st) + 1)] for n, r, st in zip((10, 9, 7), roi, strides)
    ]
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                patch = image[None, :, a : a + 6, b : b + 6, c : c + 4]
                score[:, a : a + 6, b : b + 6, c : c + 4] += torch.softmax(model(patch), 1)[0]
                count[a : a + 6, b : b + 6, c : c + 4] += 1
    # probabilities (<= 1): a voxel averages at most 3 x 3 x 3 windows' softmax, summed in another order
    bound = tol(torch.float32, 27)
    torch.testing.assert_close(probs, score / count, atol=bound, rtol=bound)


def test_whole_image_2d_is_softmax_of_one_pass_and_custom_probabilities():
    model = torch.nn.Conv2d(3, 3, 1)
    image = torch.randn(3, 8, 5)
    probs = predict_probabilities(model, image, eval_cfg=EvalConfig())
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.softmax(model(image[None]), 1)[0])
    sig = predict_probabilities(model, image, eval_cfg=EvalConfig(), probabilities_fn=torch.sigmoid)
    with torch.no_grad():
        torch.testing.assert_close(sig, torch.sigmoid(model(image[None]))[0])


class FixedLogits(torch.nn.Module):
    """Returns one-hot logits of a fixed label map, whatever the input."""

    def __init__(self, label_map, num_classes=3):
        super().__init__()
        onehot = torch.nn.functional.one_hot(torch.as_tensor(label_map), num_classes).movedim(-1, 0).float()
        self.register_buffer("logits", 10 * onehot[None])

    def forward(self, x):
        return self.logits.expand(x.shape[0], *self.logits.shape[1:])


def _gs_case(cid="a"):
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[2:6, 2:6] = 1  # disc 16 px
    gt[3:5, 3:5] = 2  # cup 4 px (inside the disc)
    return {"id": cid, "image": np.zeros((3, 8, 8), np.float32), "label": gt, "spacing": (1.0, 1.0)}


@pytest.mark.parametrize(("spatial", "fmt"), [((2,), torch.channels_last), ((3,), torch.channels_last_3d)])
@pytest.mark.parametrize("amp", [False, True])
def test_channels_last_and_amp_predictions_match_the_default(spatial, fmt, amp):
    """eval.channels_last (and eval.amp, bfloat16 on CPU) change how the forward runs, not the probabilities."""
    torch.manual_seed(0)
    dims = spatial[0]
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    model = torch.nn.Sequential(conv(2, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 3, 3, padding=1))
    image = np.random.default_rng(0).standard_normal((2, *([24] * dims)), dtype=np.float32)
    small = EvalConfig(roi_size=[16, 16, 12], strides=[8, 8, 6])
    reference = predict_probabilities(model, image, eval_cfg=small)
    fast = predict_probabilities(model, image, eval_cfg=EvalConfig(roi_size=[16, 16, 12], strides=[8, 8, 6],
                                                                   channels_last=True, amp=amp))
    assert model[0].weight.is_contiguous(memory_format=fmt) and not model[0].weight.is_contiguous()
    assert fast.dtype == torch.float32 and fast.shape == reference.shape == (3, *([24] * dims))
    # oneDNN's channels-last kernels sum a logit's 8 x 3^d terms in another order (float32); bf16 autocast
    # rounds the input and the weights to bfloat16 (2 roundings); probabilities lie in [0, 1] (atol)
    bound = tol(torch.bfloat16, ops=2) if amp else tol(torch.float32, 8 * 3**dims)
    torch.testing.assert_close(fast, reference, rtol=0, atol=bound)
    assert not torch.equal(reference, torch.full_like(reference, 1 / 3))  # the model is not trivially uniform
    with pytest.raises(ValueError, match=r"eval.channels_last=true needs 2D or 3D data"):
        predict_probabilities(model, image[..., 0, 0] if dims == 3 else image[..., 0], eval_cfg=EvalConfig(channels_last=True))


def test_evaluate_model_rows_match_hand_worked_dice(tmp_path):
    case = _gs_case()
    pred = case["label"].copy()
    pred[2:6, 4:6] = 0  # keep the left half of the disc: 8 px, cup cells (3..4, 3) -> 2 px
    model = FixedLogits(pred)
    df = evaluate_model(model, [case], data_cfg={"structures": STRUCTURES}, eval_cfg={"save_predictions": "all"},
                        predictions_dir=tmp_path)
    disc = df[df.structure == "disc"].iloc[0]
    cup = df[df.structure == "cup"].iloc[0]
    assert disc["dice"] == pytest.approx(2 * 8 / (16 + 8))
    assert disc["jaccard"] == pytest.approx(8 / 16)
    assert (disc["tp"], disc["fp"], disc["fn"]) == (8, 0, 8)
    assert cup["dice"] == pytest.approx(2 * 2 / (4 + 2))
    assert df.attrs["case_ids"] == ["a"]
    np.testing.assert_array_equal(load_prediction(tmp_path / "a.png"), pred)


def test_missing_prediction_and_shape_mismatch_are_errors():
    case = _gs_case()
    with pytest.raises(ValueError, match="no prediction for test case 'a'"):
        evaluate_predictions({}, [case], structures=STRUCTURES)
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions({"a": np.zeros((4, 4), int)}, [case], structures=STRUCTURES)


def test_prediction_files_round_trip_and_missing_file(tmp_path):
    lab2 = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    lab3 = np.arange(24).reshape(2, 3, 4) % 2
    save_prediction(tmp_path, "x", lab2)
    save_prediction(tmp_path, "y", lab3, spacing=(0.625, 0.625, 0.625))
    preds = load_prediction_folder(tmp_path, ["x", "y"])
    np.testing.assert_array_equal(preds["x"], lab2)
    np.testing.assert_array_equal(preds["y"], lab3)
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(FileNotFoundError, match="'z'"):
        load_prediction_folder(tmp_path, ["x", "z"])
    with pytest.raises(ValueError, match="class indices"):
        save_prediction(tmp_path, "bad", np.full((2, 2), 300))


def test_ids_to_save():
    ids = ["c", "a", "b"]
    assert ids_to_save(ids, EvalConfig(save_predictions="some", num_saved=2)) == ["a", "b"]
    assert ids_to_save(ids, EvalConfig(save_predictions="all")) == ["a", "b", "c"]
    assert ids_to_save(ids, EvalConfig(save_predictions="none")) == []


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"strides": [18, 18]}, "one entry per axis"),
        ({"strides": [0, 18, 4]}, "strides"),
        ({"strides": [200, 18, 4]}, "strides"),
        ({"save_predictions": "few"}, "save_predictions"),
        ({"workers": 0}, "workers"),
        ({"sw_batch_size": 0}, "sw_batch_size"),
    ],
)
def test_eval_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        eval_config(bad)


def _rows():
    rows = []
    for cid, disc, cup in (("a", 0.9, 0.6), ("b", 0.8, 0.7)):
        for s, d in (("disc", disc), ("cup", cup)):
            rows.append({"id": cid, "structure": s, "dice": d, "jaccard": d / (2 - d), "hd95": 2.0, "asd": 1.0,
                         "tp": 1, "fp": 0, "fn": 0, "n_pred": 1, "n_ref": 1,
                         "pred_empty": False, "ref_empty": False, "penalized": False})
    df = pd.DataFrame(rows)
    df.attrs["case_ids"] = ["a", "b"]
    return df


META = {"experiment": "table1/unet", "seed": 0, "dataset": "gs", "structures": STRUCTURES, "convention": "medpy",
        "iterations": 5, "train_time_s": 0.1}


def test_write_summary_means_flags_and_round_trip(tmp_path):
    df = _rows()
    df.loc[(df.id == "b") & (df.structure == "cup"), ["hd95", "penalized"]] = [math.inf, True]
    write_summary(tmp_path, df, META)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mean"]["disc"]["dice"] == pytest.approx(0.85)
    assert summary["std"]["disc"]["dice"] == pytest.approx(0.05)  # population std of 0.9, 0.8
    assert summary["mean"]["cup"]["hd95"] == pytest.approx(2.0)  # the infinite value is left out ...
    assert summary["flags"]["cup"]["undefined"]["hd95"] == 1  # ... and counted
    assert summary["flags"]["cup"]["penalized"] == 1
    assert [c["id"] for c in summary["cases"]] == ["a", "a", "b", "b"]
    assert pd.read_csv(tmp_path / "per_case.csv").shape == (4, 14)
    back = read_summary(tmp_path / "summary.json")
    assert math.isnan([c for c in back["cases"] if c["id"] == "b" and c["structure"] == "cup"][0]["hd95"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_case.csv", "summary.json"]


def test_every_summary_has_the_same_keys_and_older_ones_still_read(tmp_path):
    """One writer: any caller's summary has SUMMARY_KEYS (None where they do not apply), a key outside them is
    refused, and a summary written before train/eval times were split reads with the time under its meaning."""
    from rmseg.evaluation import SUMMARY_KEYS, read_times

    write_summary(tmp_path / "few", _rows(), {k: META[k] for k in ("experiment", "seed", "dataset", "structures")})
    few = json.loads((tmp_path / "few" / "summary.json").read_text())
    assert list(few)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS) and few["source"] is None
    with pytest.raises(ValueError, match="wall_time_s.*summary_meta"):
        write_summary(tmp_path / "old", _rows(), {**META, "wall_time_s": 1.0})
    old = {**few, "wall_time_s": 7.0}
    for key in ("train_time_s", "eval_time_s"):
        old.pop(key)
    (tmp_path / "train.json").write_text(json.dumps(old))
    (tmp_path / "eval.json").write_text(json.dumps({**old, "checkpoint": "x/checkpoint.pt"}))
    assert read_times(tmp_path / "train.json") == {"train_time_s": 7.0, "eval_time_s": None}
    assert read_times(tmp_path / "eval.json") == {"train_time_s": None, "eval_time_s": 7.0}
    assert read_summary(tmp_path / "eval.json")["eval_time_s"] == 7.0


def test_evaluation_imports_nothing_of_training():
    """rmseg-eval and the evaluation library never load the training loop or the train command."""
    import subprocess
    import sys

    code = ("import sys, rmseg.evaluation, rmseg.cli.evaluate, rmseg.reporting.tables; "
            "print(sorted(m for m in sys.modules if m in ('rmseg.engine.loop', 'rmseg.cli.train', 'rmseg.losses')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]", out.stdout


def test_write_summary_missing_case_is_an_error(tmp_path):
    df = _rows()
    with pytest.raises(ValueError, match=r"\('c', 'disc'\)"):
        write_summary(tmp_path, df, {**META, "case_ids": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=r"\('b', 'cup'\)"):
        write_summary(tmp_path, df.iloc[:3], {**META, "case_ids": ["a", "b"]})
    with pytest.raises(ValueError, match="lacks"):
        write_summary(tmp_path, df, {"experiment": "x"})
    assert not (tmp_path / "summary.json").exists()


def test_read_summary_rejects_corrupt_files(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"experiment": "x", "cases": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_summary(path)
    path.write_text(json.dumps({"experiment": "x", "seed": 0, "dataset": "gs", "structures": {"cup": [2]},
                                "cases": [{"id": "a", "structure": "cup", "dice": "high", "jaccard": 0, "hd95": 0, "asd": 0}]}))
    with pytest.raises(ValueError, match="dice"):
        read_summary(path)
    with pytest.raises(FileNotFoundError):
        read_summary(tmp_path / "absent.json")


# ---------------------------------------------------------------- rmseg-eval on tiny synthetic data


@pytest.fixture(scope="module")
def gs_tiny(tmp_path_factory):
    """A resolved run config of Table 1's U-Net on a 3-case synthetic Drishti-GS stand-in (64x64)."""
    from omegaconf import OmegaConf

    from rmseg.config.compose import compose_config

    root = tmp_path_factory.mktemp("gs_tiny")
    cfg = compose_config([
        "experiment=table1/unet", "data=gs_synthetic", f"paths.data_dir={root}/data", "data.synthetic.num_train=2",
        "data.synthetic.num_test=3", "data.synthetic.shape=[64,64]", "data.image_size=[64,64]",
        "model.channels=[4,8,16,32,64]",
    ])
    return root, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def test_rmseg_eval_checkpoint_and_prediction_folder_agree(gs_tiny):
    from rmseg.data import load_test_cases
    from rmseg.cli.evaluate import main
    from rmseg.models import build_model

    root, cfg = gs_tiny
    torch.manual_seed(0)
    model = build_model(cfg["model"], cfg["data"])
    ckpt = root / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg, "iteration": 0})
    assert main(["--checkpoint", str(ckpt), "--out", str(root / "eval"), "--save-predictions", "all", "--device", "cpu"]) == 0
    from_ckpt = read_summary(root / "eval" / "summary.json")
    cases = load_test_cases(cfg["data"])
    assert sorted({c["id"] for c in from_ckpt["cases"]}) == sorted(c["id"] for c in cases)
    (root / "run.yaml").write_text(json.dumps({"data": cfg["data"]}))  # JSON is YAML
    argv = ["--predictions", str(root / "eval" / "predictions"), "--data", str(root / "run.yaml"), "--out", str(root / "pred")]
    assert main(argv) == 0
    assert read_summary(root / "pred" / "summary.json")["cases"] == from_ckpt["cases"]
    assert main(argv) == 2  # an existing summary is never overwritten


def test_rmseg_eval_checkpoint_on_the_data_at_another_place(gs_tiny, tmp_path, capsys):
    """``--data-override`` redirects a checkpoint's data (a copy elsewhere: here written afresh from the
    same seed) and gives the same per-case metrics; a key the data config lacks is refused by name."""
    from rmseg.cli.evaluate import main
    from rmseg.models import build_model

    root, cfg = gs_tiny
    torch.manual_seed(1)
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg["model"], cfg["data"]).state_dict(), "config": cfg, "iteration": 0})
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "here"), "--device", "cpu"]) == 0
    elsewhere = tmp_path / "elsewhere"
    moved = [f"root={elsewhere / 'release'}", f"prepared_dir={elsewhere / 'prepared'}"]
    argv = ["--checkpoint", str(ckpt), "--out", str(tmp_path / "there"), "--device", "cpu"]
    assert main([*argv, *(f"--data-override={o}" for o in moved)]) == 0
    assert (elsewhere / "prepared").is_dir()
    assert read_summary(tmp_path / "there" / "summary.json")["cases"] == read_summary(tmp_path / "here" / "summary.json")["cases"]
    assert main([*argv[:3], str(tmp_path / "bad"), "--data-override", "rooot=/x"]) == 2
    assert "['rooot']" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_rmseg_eval_perfect_predictions_and_bad_input(gs_tiny, tmp_path, capsys):
    from rmseg.data import load_test_cases
    from rmseg.cli.evaluate import main

    root, cfg = gs_tiny
    cases = load_test_cases(cfg["data"])
    for case in cases:
        save_prediction(tmp_path / "preds", case["id"], case["label"])
    (tmp_path / "data.yaml").write_text(json.dumps(cfg["data"]))
    assert main(["--predictions", str(tmp_path / "preds"), "--data", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "ok")]) == 0
    summary = read_summary(tmp_path / "ok" / "summary.json")
    assert all(c["dice"] == 1.0 and c["hd95"] == 0.0 for c in summary["cases"])
    out = capsys.readouterr().out  # the mean metrics per structure, then the path
    assert "Dice  100.00  Jaccard  100.00  95HD    0.00  ASD    0.00" in out and out.rstrip().endswith("ok/summary.json")
    (tmp_path / "preds" / f"{cases[0]['id']}.png").unlink()
    assert main(["--predictions", str(tmp_path / "preds"), "--data", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert repr(cases[0]["id"]) in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "y")]) == 2
    assert "is corrupt, unreadable" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y" / "summary.json").exists()


@pytest.mark.realdata
def test_window_starts_on_every_real_la_test_volume(shared_data):
    """On the real LA test shapes (read from the h5 headers), MONAI's windows are UA-MT's."""
    h5py = pytest.importorskip("h5py")
    root = shared_data / "la2018"
    roi, strides = (112, 112, 80), (18, 18, 4)
    overlap = sliding_window_overlap(roi, strides)
    ids = (root / "test.list").read_text().split()
    assert len(ids) == 20
    for cid in ids:
        with h5py.File(root / "2018LA_Seg_Training Set" / cid / "mri_norm2.h5", "r") as f:
            shape = f["image"].shape
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        interval = _get_scan_interval(padded, roi, 3, overlap)
        starts = {tuple(sl.start for sl in sls) for sls in dense_patch_slices(padded, roi, interval)}
        axes = [[min(st * i, n - r) for i in range(math.ceil((n - r) / st) + 1)] for n, r, st in zip(padded, roi, strides)]
        assert starts == {(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]}, cid
