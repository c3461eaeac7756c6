"""rmseg's CUDA path: training with each speed switch, agreement with the CPU, sliding-window inference,
the RM loss and DDP with two processes on one GPU. Skipped without CUDA; on a GPU machine
``scripts/gpu_check.sh`` runs them (with every other test parametrized on CUDA)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")

TINY = {
    "table1/rm20_02_22": ["data=gs_synthetic", "data.image_size=[64,64]", "data.synthetic.shape=[80,72]",
                          "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2",
                          "model.channels=[8,16,32]", "model.strides=[2,2]"],
    "table2/rm4": ["data=la_synthetic", "data.patch_size=[32,32,32]", "data.synthetic.shape=[40,40,36]",
                   "data.synthetic.num_train=2", "data.synthetic.num_test=1", "data.num_train=2", "data.batch_size=2",
                   "model.base_filters=4", "eval.roi_size=[32,32,32]", "eval.strides=[16,16,16]"],
}
TRAINER = ["trainer.max_iters=6", "trainer.checkpoint_every=6", "trainer.log_every=1", "trainer.progress_bar=false",
           "trainer.tensorboard=false"]
SWITCHES = {
    "fp32": [],
    "amp_bf16": ["trainer.amp=true"],
    "amp_fp16": ["trainer.amp=true", "trainer.amp_dtype=float16"],
    "channels_last": ["trainer.channels_last=true"],
    "cudnn_benchmark": ["trainer.cudnn_benchmark=true"],
    "amp_bf16_channels_last": ["trainer.amp=true", "trainer.channels_last=true"],
    "compile": ["trainer.compile=true"],
}
TABLE2_SWITCHES = ("fp32", "amp_bf16", "amp_fp16", "channels_last")  # compiling the 3D V-Net takes minutes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny_run(experiment: str, results: Path, data_dir: Path, device: str, *extra: str) -> Path:
    from rmseg.config import compose_config
    from rmseg.cli.train import train

    cfg = compose_config([f"experiment={experiment}", *TINY[experiment], *TRAINER, f"trainer.device={device}",
                          f"paths.results_dir={results}", f"paths.data_dir={data_dir}", *extra])
    return train(cfg)


def logged_losses(run: Path) -> list[float]:
    return [float(x) for x in re.findall(r"iteration \d+/\d+ loss ([-+0-9.eE]+)", (run / "train.log").read_text())]


@pytest.mark.parametrize("experiment, switch", [(e, s) for e in TINY for s in SWITCHES
                                                 if e.startswith("table1") or s in TABLE2_SWITCHES])
def test_cuda_training_runs_with_each_speed_switch(experiment, switch, tmp_path, data_dir):
    """A whole tiny run on CUDA (train, evaluate, run folder) per trainer switch; finite losses, Dice in [0, 1]."""
    final = tiny_run(experiment, tmp_path, data_dir, "cuda", *SWITCHES[switch])
    losses = logged_losses(final)
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    summary = json.loads((final / "summary.json").read_text())
    assert summary["cases"] and all(0.0 <= c["dice"] <= 1.0 for c in summary["cases"])
    state = torch.load(final / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    assert all(v.device.type == "cpu" for v in state["model"].values())
    if switch == "amp_fp16":
        assert state["scaler"]["scale"] > 0  # the GradScaler was enabled and saved


def test_cuda_fp32_run_follows_the_cpu_run(tmp_path, data_dir):
    """The same seed and batches on CUDA and on the CPU: the logged losses agree to cuDNN's rounding."""
    runs = [tiny_run("table1/rm20_02_22", tmp_path / device, data_dir, device) for device in ("cpu", "cuda")]
    cpu, cuda = (logged_losses(r) for r in runs)
    assert cuda == pytest.approx(cpu, rel=2e-2)


@pytest.mark.parametrize("amp, channels_last, tolerance", [(False, False, 1e-4), (False, True, 1e-4),
                                                           (True, False, 2e-2), (True, True, 2e-2)])
def test_cuda_sliding_window_inference_matches_the_cpu(amp, channels_last, tolerance):
    from rmseg.evaluation import EvalConfig, predict_probabilities
    from rmseg.models.vnet3d import VNet3D

    torch.manual_seed(0)
    model = VNet3D(in_channels=1, out_channels=2, base_filters=4).eval()
    image = torch.randn(1, 40, 36, 30)
    cfg = EvalConfig(roi_size=[16, 16, 16], strides=[8, 8, 8], sw_batch_size=4, amp=amp, channels_last=channels_last)
    reference = predict_probabilities(model, image, eval_cfg=EvalConfig(roi_size=[16, 16, 16], strides=[8, 8, 8]))
    torch.backends.cudnn.allow_tf32 = False
    try:
        on_gpu = predict_probabilities(model.cuda(), image, eval_cfg=cfg, device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert on_gpu.device.type == "cpu" and on_gpu.shape == reference.shape == (2, 40, 36, 30)
    assert (on_gpu - reference).abs().max() <= tolerance


def test_cuda_rm_loss_matches_cpu():
    """Value and gradient of the RM loss on the GPU equal the CPU's (float64: to rounding)."""
    from rmseg.losses import ResidualMomentLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 64, 48))
    values, grads = [], []
    for device in ("cpu", "cuda"):
        x = logits.to(device).requires_grad_(True)
        loss = ResidualMomentLoss([[2, 0], [0, 2], [2, 2]])(x, labels.to(device))
        loss.backward()
        values.append(loss.detach().cpu())
        grads.append(x.grad.cpu())
    torch.testing.assert_close(values[1], values[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- DDP: two processes on one GPU


def _ddp_rank(rank: int, port: int, out: str) -> None:
    """One rank of a two-process DDP step on cuda:0 through rmseg.engine.distributed.Ranks (NCCL)."""
    from torch.nn import functional as F

    from rmseg.engine.distributed import Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.backends.cudnn.allow_tf32 = False
    ranks, device = Ranks(2, rank, rank), torch.device("cuda", 0)
    try:
        ranks.start(device)
        model, images, labels = _ddp_problem()
        net = ranks.wrap(model.to(device), device)
        share = slice(2 * rank, 2 * rank + 2)
        loss = F.cross_entropy(net(images[share].to(device)), labels[share].to(device))
        loss.backward()
        mean = ranks.mean({"loss": loss.item()})["loss"]
        torch.save({"grads": [p.grad.cpu() for p in model.parameters()], "loss": mean}, Path(out) / f"rank{rank}.pt")
    except Exception as exc:  # noqa: BLE001 - reported to the test, which skips where NCCL refuses
        (Path(out) / f"rank{rank}.err").write_text(f"{type(exc).__name__}: {exc}")
    finally:
        ranks.close()


def _ddp_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(4, 3, 16, 16, generator=gen), torch.randint(0, 3, (4, 16, 16), generator=gen)


def test_cuda_ddp_two_processes_on_one_gpu_average_the_gradients(tmp_path):
    """Two ranks on cuda:0 (NCCL) each take half of a batch of 4: DDP's averaged gradient is the one-process
    gradient of the whole batch. NCCL refuses two ranks on one device in most versions: then skipped."""
    import torch.multiprocessing as mp
    from torch.nn import functional as F

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(_ddp_rank, args=(port, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.skip("two NCCL ranks on one GPU did not finish in 60 s (NCCL waits for a second device)")
    errors = [p.read_text() for p in sorted(tmp_path.glob("rank*.err"))]
    if errors:
        if any(re.search(r"duplicate gpu|invalid usage|ncclInvalidUsage", e, re.I) for e in errors):
            pytest.skip(f"NCCL refuses two ranks on one GPU: {errors[0][:300]}")
        pytest.fail(f"DDP on one GPU failed: {errors}")
    model, images, labels = _ddp_problem()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["loss"] == pytest.approx(loss.item(), rel=1e-5)
        for got, want in zip(result["grads"], (p.grad for p in model.parameters())):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
