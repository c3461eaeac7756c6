"""Cost of the rival location-aware losses next to CE+Dice, and the two exact-EDT backends.

Loss cases (forward + backward w.r.t. the logits, medians over repeats, distance maps included):

- 2D: logits 4x3x512x512 (Drishti-GS-like disc and cup discs as labels);
- 3D: logits 2x2x112x112x80 (an ellipsoid as the left atrium).

Each loss is timed as training runs it: ``SegmentationLoss`` = CE+Dice (MONAI ``DiceCELoss``) plus the
term (``+boundary``, ``+hd`` ...), except ``sdf`` which replaces CE+Dice (configs/loss/sdf.yaml). The
losses of one case are timed in interleaved rounds (one call of each per round), so a load change on
a shared machine hits all of them alike; ratios are to CE+Dice of the same rounds.

Distance maps: the signed distance map of the ground truth of each case with scipy's
``distance_transform_edt`` and with the ``edt`` package, interleaved; the largest difference between
the two maps is recorded (the default backend of ``rmseg.losses.distance_maps`` is the faster one).

    python -m benchmarks.losses [--quick] [--repeats N] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import bench_parser, markdown_table, pick_device, time_interleaved, write_report
from rmseg.losses import (
    AdaptiveRegionLoss,
    BoundaryLoss,
    HausdorffDistanceLoss,
    RegionWiseLoss,
    ResidualMomentLoss,
    SegmentationLoss,
    SignedDistanceLoss,
)
from rmseg.losses.distance_maps import DEFAULT_BACKEND, signed_distance_map

FULL_SHAPES = {"2D": (4, 3, 512, 512), "3D": (2, 2, 112, 112, 80)}
QUICK_SHAPES = {"2D": (2, 3, 128, 128), "3D": (1, 2, 48, 48, 32)}


def make_labels(shape: tuple[int, ...]) -> torch.Tensor:
    """Labels ``(B, 1, *S)``: 2D a disc (1) holding a cup (2), 3D an ellipsoid (1), shifted per sample."""
    batch, spatial = shape[0], shape[2:]
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
    labels = np.zeros((batch, 1, *spatial), dtype=np.int64)
    for b in range(batch):
        shift = 0.1 * b
        r2 = sum(((g - shift) / (0.5 if i < 2 else 0.7)) ** 2 for i, g in enumerate(grids))
        labels[b, 0][r2 < 1] = 1
        if shape[1] > 2:
            labels[b, 0][r2 < 0.35] = 2
    return torch.from_numpy(labels)


def loss_factories(spatial_dims: int) -> dict[str, Callable[[], torch.nn.Module]]:
    orders = [(2, 0), (0, 2), (2, 2)] if spatial_dims == 2 else [(2, 0, 0), (0, 2, 0), (0, 0, 2), (2, 2, 2)]
    return {
        "ce_dice": lambda: SegmentationLoss(),
        "+rm": lambda: SegmentationLoss(terms=[ResidualMomentLoss(orders=orders)]),
        "+boundary": lambda: SegmentationLoss(terms=[BoundaryLoss()]),
        "+hd (foreground)": lambda: SegmentationLoss(terms=[HausdorffDistanceLoss()]),
        "+hd (inside_outside)": lambda: SegmentationLoss(terms=[HausdorffDistanceLoss(variant="inside_outside")]),
        "sdf (alone)": lambda: SegmentationLoss(terms=[SignedDistanceLoss()], lambda_ce=0.0, lambda_dice=0.0),
        "+region_wise": lambda: SegmentationLoss(terms=[RegionWiseLoss()]),
        "+adaptive_region": lambda: SegmentationLoss(terms=[AdaptiveRegionLoss()]),
    }


def bench_losses(case: str, shape: tuple[int, ...], repeats: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    logits = torch.randn(shape, device=device, requires_grad=True)
    labels = make_labels(shape).to(device)
    losses = {name: make() for name, make in loss_factories(len(shape) - 2).items()}

    def step(loss: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            logits.grad = None
            loss(logits, labels).backward()

        return run

    times = time_interleaved({name: step(loss) for name, loss in losses.items()}, repeats, 1, device)
    base = statistics.median(times["ce_dice"])
    return [
        {
            "case": case,
            "shape": "x".join(map(str, shape)),
            "loss": name,
            "median_s": statistics.median(t),
            "min_s": min(t),
            "ratio_to_ce_dice": statistics.median(t) / base,
            "repeats": len(t),
        }
        for name, t in times.items()
    ]


def bench_edt(case: str, shape: tuple[int, ...], repeats: int) -> list[dict]:
    labels = make_labels(shape)
    masks = torch.nn.functional.one_hot(labels[:, 0], shape[1]).movedim(-1, 1)[:, 1:].bool().numpy()
    backends = ["scipy"]
    try:
        import edt  # noqa: F401

        backends.append("edt")
    except ImportError:
        pass
    maps = {b: signed_distance_map(masks, backend=b) for b in backends}
    times = time_interleaved({b: (lambda b=b: signed_distance_map(masks, backend=b)) for b in backends}, repeats, 1,
                        torch.device("cpu"))
    diff = float(np.abs(maps["edt"] - maps["scipy"]).max()) if "edt" in maps else None
    base = statistics.median(times["scipy"])
    return [
        {
            "case": case,
            "masks": "x".join(map(str, masks.shape)),
            "backend": b,
            "median_s": statistics.median(t),
            "min_s": min(t),
            "ratio_to_scipy": statistics.median(t) / base,
            "max_abs_diff_vs_scipy": diff if b == "edt" else 0.0,
            "repeats": len(t),
        }
        for b, t in times.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (2 if args.quick else 7 if args.full else 5)
    loss_rows, edt_rows = [], []
    for case, shape in shapes.items():
        edt_rows += bench_edt(case, shape, repeats)
        loss_rows += bench_losses(case, shape, repeats, device)
        print(f"{case} done", flush=True)
    md = "\n".join([
        "# Loss benchmark: rival location-aware losses next to CE+Dice",
        "",
        "Forward + backward w.r.t. the logits, distance maps included (exact EDT on the CPU, backend "
        f"`{DEFAULT_BACKEND}`), median of {repeats} interleaved rounds after one warm-up. `+x` = CE+Dice + x "
        "as trained; `sdf (alone)` replaces CE+Dice. Ratio: median over CE+Dice's median in the same rounds.",
        "",
        markdown_table(loss_rows, ["case", "shape", "loss", "median_s", "min_s", "ratio_to_ce_dice"]),
        "",
        "## Exact EDT backends: signed distance map of the ground truth (foreground classes)",
        "",
        markdown_table(edt_rows, ["case", "masks", "backend", "median_s", "min_s", "ratio_to_scipy",
                                  "max_abs_diff_vs_scipy"]),
    ])
    name = "losses_quick" if args.quick else "losses"
    md_path, _ = write_report(name, md, {"repeats": repeats, "losses": loss_rows, "edt": edt_rows},
                              device=device, out_dir=args.out_dir)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
