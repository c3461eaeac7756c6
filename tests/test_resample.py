"""Integer-factor resampling of reduced-resolution protocols (rmseg.data.resample), worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmseg.data.resample import coarse_shape, downsample_image, downsample_labels, factors_of, upsample_probabilities
from rmseg.data.transforms import Downsampled

from conftest import tol


def test_block_means_with_edge_padding():
    image = np.arange(6, dtype=np.float32).reshape(1, 3, 2)  # rows [0 1], [2 3], [4 5]
    out = downsample_image(image, (2, 2))
    # block 1: rows 0-1 -> (0+1+2+3)/4; block 2: row 2 padded by its own copy -> (4+5+4+5)/4
    np.testing.assert_array_equal(out, np.array([[[1.5], [4.5]]], dtype=np.float32))
    assert out.dtype == np.float32
    assert coarse_shape((3, 2), (2, 2)) == (2, 1)


def test_majority_labels_ties_go_to_the_higher_class():
    label = np.array([[[0, 0, 1, 2],
                       [0, 1, 2, 2]]], dtype=np.uint8)
    # left block: three 0 and one 1 -> 0; right block: one 1 and three 2 -> 2
    np.testing.assert_array_equal(downsample_labels(label, (2, 2), 3), [[[0, 2]]])
    tie = np.array([[[0, 2], [2, 0]]], dtype=np.int64)  # two 0, two 2 -> 2
    out = downsample_labels(tie, (2, 2), 3)
    np.testing.assert_array_equal(out, [[[2]]])
    assert out.dtype == np.int64


def test_upsampling_returns_a_linear_ramp_exactly_inside_and_crops():
    ramp = np.arange(8, dtype=np.float32)[None, :, None].repeat(3, axis=2)  # (1, 8, 3)
    coarse = downsample_image(ramp, (2, 1))  # block centres: 0.5, 2.5, 4.5, 6.5
    np.testing.assert_allclose(coarse[0, :, 0], [0.5, 2.5, 4.5, 6.5])
    up = upsample_probabilities(torch.from_numpy(coarse), (2, 1), (8, 3)).numpy()
    # interior samples lie between two block centres: linear interpolation gives the ramp back
    # float32 interpolation of values <= 6.5: a few roundings of the largest value
    np.testing.assert_allclose(up[0, 1:7, 0], np.arange(1, 7), atol=6.5 * tol(torch.float32))
    # at the ends the nearest centre's value is held: 0.5 and 6.5
    assert up[0, 0, 0] == pytest.approx(0.5) and up[0, 7, 0] == pytest.approx(6.5)
    odd = upsample_probabilities(torch.ones(2, 4, 2, 3), (2, 2, 2), (7, 3, 5))
    assert tuple(odd.shape) == (2, 7, 3, 5)


def test_bad_factors_and_shapes_are_named():
    with pytest.raises(ValueError, match=r"data.downsample=\[2, 0\]"):
        factors_of([2, 0], 2)
    with pytest.raises(ValueError, match=r"data.downsample=\[2, 2\] must be 3"):
        factors_of([2, 2], 3)
    with pytest.raises(ValueError, match=r"coarse grid of \[8, 8\]"):
        upsample_probabilities(torch.ones(2, 3, 4), (2, 2), (8, 8))
    assert factors_of(None, 3) == (1, 1, 1)


def test_downsampled_transform_keeps_kind_and_read_only():
    image = np.random.default_rng(0).random((1, 4, 4, 2)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    image.flags.writeable = label.flags.writeable = False
    out = Downsampled((2, 2, 2), 2)({"image": image, "label": label, "id": "a"})
    assert out["image"].shape == (1, 2, 2, 1) and not out["image"].flags.writeable
    assert out["label"].dtype == np.uint8 and out["id"] == "a"
    tensors = Downsampled((2, 2), 3)({"image": torch.ones(3, 4, 4), "label": torch.zeros(1, 4, 4, dtype=torch.int64)})
    assert isinstance(tensors["image"], torch.Tensor) and tuple(tensors["label"].shape) == (1, 2, 2)


def test_la_pipeline_trains_on_the_coarse_grid_and_scores_on_the_full_one(tmp_path):
    from rmseg.config import compose_config
    from rmseg.data import build_train_dataset, load_test_cases
    from rmseg.evaluation import EvalConfig, evaluate_model

    cfg = compose_config(["experiment=table2/vnet", "protocol=cpu", "data=la_synthetic", f"paths.data_dir={tmp_path}",
                          "data.synthetic.shape=[40,36,12]", "data.synthetic.num_train=2", "data.synthetic.num_test=2",
                          "data.num_train=2", "data.patch_size=[16,16,8]"])
    sample = build_train_dataset(cfg.data)[0]
    assert tuple(sample["image"].shape) == (1, 16, 16, 8)
    assert tuple(sample["full_shape"]) == (20, 18, 8)  # 40x36x12 halved (6 slices padded to the patch's 8)
    cases = load_test_cases(cfg.data)
    assert cases[0]["downsample"] == (2, 2, 2) and cases[0]["label"].shape == (40, 36, 12)

    class Threshold(torch.nn.Module):  # foreground where the (coarse) image is positive
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), x], dim=1)

    eval_cfg = EvalConfig(roi_size=[16, 16, 8], strides=[8, 8, 4], save_predictions="all")
    rows = evaluate_model(Threshold(), cases, data_cfg=cfg.data, eval_cfg=eval_cfg, predictions_dir=tmp_path / "pred")
    assert sorted(rows["id"]) == sorted(str(c["id"]) for c in cases)
    import nibabel as nib

    saved = np.asarray(nib.load(tmp_path / "pred" / f"{cases[0]['id']}.nii.gz").dataobj)
    assert saved.shape == (40, 36, 12)
    # the prediction: softmax on the coarse grid, probabilities brought back to the full grid, argmax there
    coarse = torch.from_numpy(downsample_image(cases[0]["image"], (2, 2, 2)))
    probs = torch.softmax(torch.cat([torch.zeros_like(coarse), coarse]), dim=0)
    up = upsample_probabilities(probs, (2, 2, 2), (40, 36, 12))
    np.testing.assert_array_equal(saved, up.argmax(0).numpy().astype(np.uint8))
