"""Smoke runs of the speed benchmarks on tiny sizes: record fields, positive times, no thresholds."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks import common
from benchmarks.curve_check import CPU_PROTOCOL, compare_runs, loss_curve
from benchmarks.inference import LA_LARGEST, LA_SMALLEST, ROI, STRIDES, benchmark_volume, window_count
from benchmarks.run_all import benchmark_names
from benchmarks.scaling import benchmark_sizes, plot
from benchmarks.time_to_table import estimate
from benchmarks.training import TrainStep, benchmark_setting, setting_config, synthetic_batches

from conftest import tol

CPU = torch.device("cpu")
# Narrow networks keep the smoke runs fast; the code path is the one the full sizes take.
SMALL_UNET = "model.channels=[4,8,16,32,64]"
SMALL_VNET = "model.base_filters=4"


# ---------------------------------------------------------------- common


def test_time_call_counts_calls_and_times_each():
    calls = []
    times = common.time_call(lambda: (calls.append(1), time.sleep(0.002)), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3
    assert all(t >= 0.002 for t in times)


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}])
def test_time_call_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        common.time_call(lambda: None, **kwargs)


def test_summarize_by_hand():
    assert common.summarize([3.0, 1.0, 2.0, 10.0]) == {"median_s": 2.5, "min_s": 1.0, "max_s": 10.0, "repeats": 4}
    with pytest.raises(ValueError, match="empty"):
        common.summarize([])


def test_pick_device_rejects_unknown():
    assert common.pick_device("cpu") == CPU
    with pytest.raises(ValueError, match="'tpu'"):
        common.pick_device("tpu")


def test_peak_memory_sees_a_held_allocation():
    def hold_64_mib():
        x = torch.ones(16 * 2**20)  # 64 MiB, pages touched
        time.sleep(0.05)
        return x.sum()

    assert common.peak_memory_bytes(hold_64_mib, CPU) >= 48 * 2**20


def test_markdown_table_formats_cells():
    table = common.markdown_table([{"a": 1.23456, "b": None, "c": "x"}], ["a", "b"])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.235 |  |"]


def test_write_report_adds_machine_and_archives_earlier(tmp_path):
    md, js = common.write_report("demo", "# first", {"x": 1}, out_dir=tmp_path)
    data = json.loads(js.read_text())
    assert data["x"] == 1
    assert {"date_utc", "torch", "monai", "cpu_count", "device", "commit"} <= set(data["machine"])
    assert md.read_text().startswith("# first") and "torch" in md.read_text()
    common.write_report("demo", "# second", {"x": 2}, out_dir=tmp_path)
    assert json.loads(js.read_text())["x"] == 2
    archived = sorted(p.name for p in (tmp_path / "archive").iterdir())
    assert len(archived) == 2 and all(n.startswith("demo.") for n in archived)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_write_report_rejects_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="report name"):
        common.write_report(name, "", {}, out_dir=tmp_path)


# ---------------------------------------------------------------- training


def test_synthetic_batches_hold_every_class():
    cfg = setting_config("table1", ("data.image_size=[32,32]",))
    (batch,) = synthetic_batches(cfg, (32, 32), batch_size=2, count=1, seed=0)
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["label"].shape == (2, 1, 32, 32)
    assert set(batch["label"].unique().tolist()) == {0, 1, 2}


def test_train_step_rejects_cuda_only_variant_on_cpu():
    cfg = setting_config("table1", ("data.image_size=[32,32]",))
    with pytest.raises(ValueError, match="cudnn_benchmark"):
        TrainStep(cfg, "cudnn_benchmark", CPU)
    with pytest.raises(ValueError, match="'fp16'"):
        TrainStep(cfg, "fp16", CPU)


@pytest.mark.parametrize("setting, size, fmt", [("table1", "data.image_size=[32,32]", torch.channels_last),
                                                 ("table2", "data.patch_size=[16,16,16]", torch.channels_last_3d)])
def test_train_step_applies_the_trainer_switches_of_its_variant(setting, size, fmt):
    cfg = setting_config(setting, (SMALL_UNET if setting == "table1" else SMALL_VNET, size))
    both, plain = TrainStep(cfg, "amp_bf16_channels_last", CPU), TrainStep(cfg, "amp_bf16", CPU)
    assert both.autocast and plain.autocast
    assert (both.memory_format, plain.memory_format) == (fmt, torch.contiguous_format)
    kernels = [p for p in both.model.parameters() if p.dim() >= 4]
    assert all(p.is_contiguous(memory_format=fmt) for p in kernels) and not all(p.is_contiguous() for p in kernels)


def test_training_record_2d_with_data_wait():
    result = benchmark_setting(
        "table1",
        ("fp32", "amp_bf16", "channels_last", "cudnn_benchmark", "amp_bf16_channels_last"),
        steps=2,
        warmup=1,
        device=CPU,
        overrides=(SMALL_UNET, "data.image_size=[32,32]", "data.batch_size=2", "data.synthetic.shape=[40,40]"),
        data_wait_steps=1,
    )
    assert result["input_shape"] == [2, 3, 32, 32]
    assert [v["variant"] for v in result["variants"]] == ["fp32", "amp_bf16", "channels_last", "amp_bf16_channels_last"]
    assert result["skipped"] == {"cudnn_benchmark": "CUDA only"}
    assert result["variants"][3]["curve_tolerance"] == 0.05
    for v in result["variants"]:
        assert v["median_s"] > 0 and v["it_per_s"] > 0 and len(v["losses"]) == 2
        assert all(math.isfinite(x) for x in v["losses"])
    fp32 = result["variants"][0]
    assert fp32["curve_max_rel_diff"] == 0 and fp32["speedup_vs_fp32"] == 1
    wait = result["data_wait"]
    assert "error" not in wait, wait
    assert wait["wait_median_s"] >= 0 and wait["step_median_s"] > 0 and 0 <= wait["wait_fraction"] < 1


def test_training_record_3d():
    result = benchmark_setting(
        "table2", ("fp32", "amp_bf16"), steps=2, warmup=1, device=CPU,
        overrides=(SMALL_VNET, "data.patch_size=[32,32,16]", "data.batch_size=2"),
    )
    assert result["model"] == "vnet3d" and result["input_shape"] == [2, 1, 32, 32, 16]
    assert [v["variant"] for v in result["variants"]] == ["fp32", "amp_bf16"]
    assert all(v["median_s"] > 0 for v in result["variants"])


@pytest.mark.slow
def test_training_compile_path_runs_on_cpu():
    result = benchmark_setting("table1", ("fp32", "compile"), steps=2, warmup=1, device=CPU,
                               overrides=(SMALL_UNET, "data.image_size=[32,32]", "data.batch_size=2"))
    assert result["skipped"] == {}, result["skipped"]
    compiled = result["variants"][1]
    assert compiled["variant"] == "compile" and compiled["median_s"] > 0 and len(compiled["losses"]) == 3
    # inductor reorders the float32 sums over the batch's 2 x 32 x 32 pixels (any order)
    assert compiled["curve_max_rel_diff"] < tol(torch.float32, 2 * 32 * 32)


def test_training_rejects_untimed_runs():
    with pytest.raises(ValueError, match="steps=1"):
        benchmark_setting("table1", ("fp32",), steps=1, warmup=1, device=CPU)


# ---------------------------------------------------------------- losses


def test_losses_quick_report_times_every_loss_and_edt_backend(tmp_path):
    from benchmarks import losses

    losses.main(["--quick", "--repeats", "1", "--device", "cpu", "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "losses_quick.json").read_text())
    markdown = (tmp_path / "losses_quick.md").read_text()
    for case, shape in losses.QUICK_SHAPES.items():
        rows = {r["loss"]: r for r in report["losses"] if r["case"] == case}
        assert list(rows) == list(losses.loss_factories(len(shape) - 2)), case
        assert all(r["median_s"] > 0 and r["min_s"] > 0 and r["repeats"] == 1 for r in rows.values()), rows
        assert rows["ce_dice"]["ratio_to_ce_dice"] == 1
        assert all(f"| {case} | {rows[name]['shape']} | {name} |" in markdown for name in rows), case
        edt = {r["backend"]: r for r in report["edt"] if r["case"] == case}
        assert "scipy" in edt and all(r["median_s"] > 0 for r in edt.values())
        # both backends are exact: float32 distances (a few roundings) up to the sum of the sides
        assert all(r["max_abs_diff_vs_scipy"] < tol(torch.float32) * sum(shape[2:]) for r in edt.values())


# ---------------------------------------------------------------- inference


def test_window_count_by_hand_and_against_monai():
    # LA extremes at strides 18/18/4, window 112x112x80: 3*3*3 and 9*4*3 windows.
    assert window_count(LA_SMALLEST, ROI, STRIDES) == 27
    assert window_count(LA_LARGEST, ROI, STRIDES) == 108
    assert window_count((100, 100, 70), ROI, STRIDES) == 1
    from monai.inferers import sliding_window_inference

    from rmseg.evaluation import sliding_window_overlap

    seen = []

    def count(x):
        seen.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *LA_SMALLEST), ROI, 1, count,
                             overlap=sliding_window_overlap(ROI, STRIDES))
    assert sum(seen) == 27


def test_inference_record():
    settings = [(1, False, False), (2, True, False), (2, True, True)]
    rows = benchmark_volume((48, 40, 36), settings, repeats=1, device=CPU,
                            roi=(32, 32, 32), strides=(16, 16, 4), overrides=(SMALL_VNET,))
    assert [(r["sw_batch_size"], r["amp"], r["channels_last"]) for r in rows] == settings
    for r in rows:
        assert r["windows"] == 2 * 2 * 2 and r["median_s"] > 0 and r["s_per_window"] > 0
    assert min(r["relative_to_fastest"] for r in rows) == 1
    with pytest.raises(ValueError, match=r"\(sw_batch_size >= 1, amp, channels_last\)"):
        benchmark_volume((48, 40, 36), [(1, False)], repeats=1, device=CPU)


# ---------------------------------------------------------------- scaling


def test_scaling_record_and_plot(tmp_path):
    rows = benchmark_sizes("table2", (32, 48), repeats=1, device=CPU, overrides=(SMALL_VNET,))
    assert [r["size"] for r in rows] == [32, 48]
    assert [r["voxel_ratio"] for r in rows] == [1, 1.5**3]
    assert all(r["median_s"] > 0 and r["peak_memory_mib"] >= 0 for r in rows)
    path = tmp_path / "scaling.png"
    plot(rows, path, CPU)
    plot(rows, path, CPU)
    assert path.stat().st_size > 0
    assert len(list((tmp_path / "archive").glob("scaling.*.png"))) == 1


# ---------------------------------------------------------------- time to table


def test_time_to_table_arithmetic():
    variants = [
        {"variant": "fp32", "median_s": 0.5, "curve_matches": True},
        {"variant": "amp_bf16", "median_s": 0.25, "curve_matches": True},
        {"variant": "compile", "median_s": 0.1, "curve_matches": False},
    ]
    training = {"settings": [{"setting": "table1", "variants": variants}, {"setting": "table2", "variants": variants}]}
    inference = {"rows": [{"s_per_window": 0.02}, {"s_per_window": 0.01}]}
    rows = estimate(training, inference, s_per_image_2d=0.1, seeds=3)
    assert [(r["table"], r["variant"]) for r in rows] == [
        ("table1", "fp32"), ("table1", "amp_bf16"), ("table2", "fp32"), ("table2", "amp_bf16")
    ]
    t1 = rows[0]
    assert t1["iterations"] == 2000  # the paper's Table 1 protocol
    assert t1["run_min"] == pytest.approx((2000 * 0.5 + 51 * 0.1) / 60)
    assert t1["total_h"] == pytest.approx(t1["rows"] * 3 * (2000 * 0.5 + 51 * 0.1) / 3600)
    t2 = rows[3]
    assert t2["iterations"] == 6000  # Ma et al.'s Table 2 protocol
    assert t2["s_per_test_case"] == pytest.approx(0.01 * 108)
    assert t2["run_min"] == pytest.approx((6000 * 0.25 + 20 * 0.01 * 108) / 60)
    # with AMP / channels-last inference rows, each variant's test time comes from its own setting
    inference = {"rows": [{"s_per_window": 0.02, "amp": False, "channels_last": False},
                          {"s_per_window": 0.01, "amp": False, "channels_last": False},
                          {"s_per_window": 0.004, "amp": True, "channels_last": False},
                          {"s_per_window": 0.001, "amp": True, "channels_last": True}]}
    rows = estimate(training, inference, s_per_image_2d=0.1, seeds=3)
    assert [r["s_per_test_case"] for r in rows[2:]] == pytest.approx([0.01 * 108, 0.004 * 108])


def test_run_all_orders_benchmarks():
    names = benchmark_names()
    assert {"training", "inference", "scaling", "time_to_table"} <= set(names)
    assert names[-1] == "time_to_table"
    assert not {"common", "run_all", "__init__"} & set(names)
    assert "curve_check" in names and "curve_check" not in benchmark_names(quick=True)


def test_time_interleaved_alternates_the_variants_after_warmup():
    from benchmarks.common import time_interleaved

    calls: list[str] = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 2, "cpu")
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed rounds, one call of each per round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


# ---------------------------------------------------------------- curve check


def _fake_run(folder, losses, dice, wall_s):
    folder.mkdir(parents=True)
    pd.DataFrame({"iteration": [10 * (i + 1) for i in range(len(losses))], "lr": 0.01, "loss": losses}).to_csv(
        folder / "curve.csv", index=False)
    ids = [f"case{i // 2}" for i in range(len(dice))]
    pd.DataFrame({"id": ids, "structure": ["disc", "cup"] * (len(dice) // 2), "dice": dice}).to_csv(
        folder / "per_case.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"train_time_s": wall_s, "eval_time_s": 1.0}))
    return folder


def test_curve_check_compares_two_runs_by_hand(tmp_path):
    ref = _fake_run(tmp_path / "ref", [1.0, 0.8, 0.5, 0.4], [0.9, 0.5, 0.8, 0.6], 100.0)
    close = _fake_run(tmp_path / "close", [1.0, 0.9, 0.5, 0.41], [0.91, 0.49, 0.8, 0.61], 25.0)
    got = compare_runs(ref, close)
    assert got["logged_iterations"] == 4
    assert got["curve_max_rel_diff"] == pytest.approx(0.1 / 0.8)
    assert got["curve_median_rel_diff"] == pytest.approx((0 + 0.025) / 2)  # of [0, 0.125, 0, 0.025]
    assert got["last_tenth_mean_loss_ref"] == pytest.approx(0.4) and got["last_tenth_mean_loss_var"] == pytest.approx(0.41)
    assert got["dice_mean_diff"] == pytest.approx((0.01 - 0.01 + 0 + 0.01) / 4)
    assert got["speedup"] == pytest.approx(4.0) and got["passes"]
    worse = _fake_run(tmp_path / "worse", [1.0, 0.9, 0.6, 0.5], [0.8, 0.4, 0.7, 0.5], 25.0)
    assert not compare_runs(ref, worse)["passes"]  # tail loss 25% higher, Dice 10 points lower
    # 12 cases each 1 point lower: significant (p < 0.05) though under 2 points -> fails; 1 point higher passes
    base = [0.5 + 0.03 * i for i in range(12)]
    ref12 = _fake_run(tmp_path / "ref12", [1.0, 0.8, 0.5, 0.4], base, 100.0)
    lower = _fake_run(tmp_path / "lower", [1.0, 0.8, 0.5, 0.4], [d - 0.01 for d in base], 50.0)
    higher = _fake_run(tmp_path / "higher", [1.0, 0.8, 0.5, 0.4], [d + 0.01 for d in base], 50.0)
    got_lower, got_higher = compare_runs(ref12, lower), compare_runs(ref12, higher)
    assert got_lower["dice_wilcoxon_p"] < 0.05 and got_higher["dice_wilcoxon_p"] < 0.05
    assert not got_lower["passes"] and got_higher["passes"]
    other = _fake_run(tmp_path / "other", [1.0, 0.9, 0.6], [0.8, 0.4, 0.7, 0.5], 25.0)
    with pytest.raises(ValueError, match="logged different iterations"):
        compare_runs(ref, other)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "curve.csv").write_text("iteration,lr,loss\n")
    with pytest.raises(ValueError, match="has no rows"):
        loss_curve(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="curve.csv"):
        loss_curve(tmp_path)


def test_curve_check_reads_curve_csv_not_the_log(tmp_path):
    """The loss curve comes from the machine-readable curve.csv (one row per logged iteration, a resumed
    run's rows once), whatever train.log says; an older summary's wall_time_s still gives the training time."""
    ref = _fake_run(tmp_path / "ref", [1.0, 0.8], [0.9, 0.5], 10.0)
    var = _fake_run(tmp_path / "var", [1.0, 0.4], [0.9, 0.5], 5.0)
    (var / "train.log").write_text("INFO rmseg.train: iteration 10/20 loss 9.0 {} lr 0.01\n")
    (var / "summary.json").write_text(json.dumps({"wall_time_s": 5.0}))  # written before train_time_s
    assert loss_curve(var) == {10: 1.0, 20: 0.4}
    got = compare_runs(ref, var)
    assert got["curve_max_rel_diff"] == pytest.approx(0.5) and got["speedup"] == pytest.approx(2.0)


def test_curve_check_cpu_protocol_is_the_small_protocol():
    from rmseg.config.compose import compose_config

    gs = compose_config(["experiment=table1/unet", *CPU_PROTOCOL])
    la = compose_config(["experiment=table2/vnet", *CPU_PROTOCOL])
    assert gs.protocol.name == la.protocol.name == "small"
    assert list(gs.data.image_size) == [128, 128] and gs.trainer.max_iters == 1000
    assert la.model.base_filters == 8 and list(la.data.patch_size) == [64, 64, 48]


# ---------------------------------------------------------------- data loader


def test_data_benchmark_baseline_draws_the_same_samples(tmp_path):
    """The MONAI-copies baseline is the same pipeline (same samples, bitwise) done with copies."""
    from benchmarks.data import measure, monai_copies_la_dataset
    from rmseg.config.compose import compose_config
    from rmseg.data import build_train_dataset

    overrides = ["data=la_synthetic", f"paths.data_dir={tmp_path}", "data.num_train=3", "data.synthetic.num_train=3",
                 "data.synthetic.num_test=1", "data.synthetic.shape=[40,36,12]", "data.patch_size=[32,32,16]",
                 "data.batch_size=2"]
    cfg = compose_config(["name=t", *overrides]).data
    views, copies = build_train_dataset(cfg), monai_copies_la_dataset(cfg)
    for _ in range(4):
        for i in range(3):
            a, b = views[i], copies[i]
            for key in ("image", "label", "offset", "full_shape"):
                assert torch.equal(a[key], b[key]) and a[key].dtype == b[key].dtype, key
    rows = measure("tiny", overrides, repeats=1)
    assert [(r["pipeline"], r["cache"]) for r in rows] == [("rmseg", True), ("rmseg", False), ("monai_copies", True)]
    assert all(r["cases"] == 3 and r["sample_shape"] == "1x32x32x16" and r["samples_per_s"] > 0 for r in rows)
