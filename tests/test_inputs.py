"""Bad inputs fail before work starts, with an error naming the file or value, the problem and the fix:
data files (both splits), soft maps, MONAI's wrapped reader errors, metrics, rmseg-eval, the loss."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from rmseg.config import compose_config
from rmseg.data import build_train_dataset, data_root
from rmseg.data.drishti import read_png
from rmseg.data.la import LISTS, read_h5
from rmseg.cli.evaluate import main as eval_main
from rmseg.evaluation import evaluate_predictions, load_prediction
from rmseg.losses.compound import SegmentationLoss
from rmseg.metrics import evaluate_case, evaluate_label_map
from rmseg.cli.train import train

TINY_LA = ["experiment=table2/rm4", "data=la_synthetic", "data.patch_size=[16,16,16]", "data.synthetic.shape=[24,24,16]",
           "data.synthetic.num_train=2", "data.synthetic.num_test=1", "data.num_train=2", "data.batch_size=2",
           "model.base_filters=2", "eval.roi_size=[16,16,16]", "eval.strides=[8,8,8]", "trainer=demo",
           "trainer.max_iters=2", "trainer.checkpoint_every=2", "trainer.log_every=1"]


def write_h5(path: Path, image: np.ndarray, label: np.ndarray | None) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)


def la_config(tmp_path: Path, *extra: str):
    return compose_config([*TINY_LA, f"paths.results_dir={tmp_path / 'results'}", f"paths.data_dir={tmp_path / 'data'}",
                           *extra])


@pytest.mark.parametrize("label, message", [
    (np.array([0, 255], np.uint8), r"values \[0, 255\].*label // 255"),
    (np.array([0.0, 0.5], np.float32), "non-integer"),
])
def test_la_labels_outside_the_classes_are_refused(tmp_path, label, message):
    path = tmp_path / "case.h5"
    write_h5(path, np.zeros((2, 2, 2), np.float32), np.resize(label, (2, 2, 2)))
    with pytest.raises(ValueError, match=message) as err:
        read_h5(path)
    assert str(path) in str(err.value)


def test_la_labels_stored_as_whole_floats_are_read_as_classes(tmp_path):
    path = tmp_path / "case.h5"
    label = np.resize(np.array([0.0, 1.0], np.float32), (2, 2, 2))
    write_h5(path, np.zeros((2, 2, 2), np.float32), label)
    assert np.array_equal(read_h5(path)[1], label.astype(np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_la_images_with_nan_or_inf_are_refused(tmp_path, bad):
    path = tmp_path / "case.h5"
    image = np.zeros((2, 2, 2), np.float32)
    image[0, 0, 0] = bad
    write_h5(path, image, np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="1 NaN/Inf voxels") as err:
        read_h5(path)
    assert str(path) in str(err.value)


def test_16_bit_soft_maps_are_rescaled_not_clipped(tmp_path):
    levels16 = np.array([[0, 16448, 32896], [49087, 65535, 0]], np.uint16)  # 0, 64, 128, 191, 255 times 257
    path = tmp_path / "soft.png"
    Image.fromarray(levels16).save(path)
    assert Image.open(path).mode.startswith("I")
    assert read_png(path, "L").tolist() == [[0, 64, 128], [191, 255, 0]]


@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_bad_training_case_raises_the_readers_error_not_monais_wrapper(tmp_path, cache):
    cfg = la_config(tmp_path, f"data.cache={cache}")
    root = data_root(cfg.data)
    case = root / "2018LA_Seg_Training Set" / "SYNTH000" / "mri_norm2.h5"
    write_h5(case, np.zeros((24, 24, 16), np.float32), np.full((24, 24, 16), 255, np.uint8))
    with pytest.raises(ValueError, match="label // 255") as err:
        build_train_dataset(cfg.data)[0]
    assert str(case) in str(err.value) and "applying transform" not in str(err.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _drop_label(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        del f["label"]


@pytest.mark.parametrize("spoil, message", [
    (lambda root: _truncate(root / "2018LA_Seg_Training Set" / "SYNTH002" / "mri_norm2.h5"), "cannot read h5 file"),
    (lambda root: _drop_label(root / "2018LA_Seg_Training Set" / "SYNTH002" / "mri_norm2.h5"), "lacks the dataset"),
    (lambda root: (root / LISTS["test"]).write_text("\n"), "lists no case id"),
], ids=["truncated", "label-less", "empty-list"])
def test_a_bad_test_split_fails_before_the_run_folder_is_created(tmp_path, spoil, message):
    cfg = la_config(tmp_path)
    spoil(data_root(cfg.data))
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.parametrize("evaluate", [
    lambda a: evaluate_case(a, a),
    lambda a: evaluate_label_map(a, a, {"x": [1]}),
])
def test_metrics_refuse_zero_size_arrays(evaluate):
    with pytest.raises(ValueError, match=r"shape \(0, 4\), no pixel"):
        evaluate(np.zeros((0, 4), np.uint8))


CASES = [{"id": "c0", "label": np.zeros((4, 5, 6), np.int64), "spacing": (1.0, 1.0, 1.0)}]


def test_a_prediction_with_reversed_axes_is_called_out():
    with pytest.raises(ValueError, match=r"case 'c0'.*\(6, 5, 4\).*axes look reversed \(SimpleITK order"):
        evaluate_predictions({"c0": np.zeros((6, 5, 4), np.int64)}, CASES, structures={"atrium": [1]})


def test_a_prediction_outside_the_classes_is_refused():
    pred = np.zeros((4, 5, 6), np.int64)
    pred[0, 0, 0] = 255
    with pytest.raises(ValueError, match=r"prediction of case 'c0' holds values \[0, 255\].*classes are 0\.\.1"):
        evaluate_predictions({"c0": pred}, CASES, structures={"atrium": [1]})


@pytest.mark.parametrize("name", ["c0.png", "c0.nii.gz"])
def test_an_unreadable_prediction_is_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=f"cannot read prediction {path}"):
        load_prediction(path)


def test_rmseg_eval_reports_an_unreadable_prediction_without_a_traceback(tmp_path, capsys):
    cfg = compose_config(["data=la_synthetic", "data.synthetic.shape=[24,24,16]", "data.synthetic.num_train=1",
                          "data.synthetic.num_test=1", "data.num_train=1", f"paths.data_dir={tmp_path / 'data'}"])
    data_yaml = tmp_path / "data.yaml"
    from omegaconf import OmegaConf

    data_yaml.write_text(OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))))
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "SYNTH001.nii.gz").write_bytes(b"\x1f\x8b truncated")
    assert eval_main(["--predictions", str(preds), "--data", str(data_yaml), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read prediction" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("share", [True, False])
def test_segmentation_loss_refuses_fractional_and_channel_less_labels(share):
    loss = SegmentationLoss(share_activation=share)
    logits = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="fractional"):
        loss(logits, torch.full((2, 1, 8, 8), 0.5))
    with pytest.raises(ValueError, match=r"lacks the channel axis: pass labels of shape \(2, 1, 8, 8\)"):
        loss(logits, torch.zeros(2, 8, 8, dtype=torch.long))
    assert torch.isfinite(loss(logits, torch.ones(2, 1, 8, 8)))  # whole-valued float labels stay accepted
