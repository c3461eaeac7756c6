"""Cost of the residual moment loss: CE+Dice alone vs CE+Dice+RM, and RM's share of a training step.

Loss cases (forward + backward w.r.t. the logits, medians over repeats):

- 2D: logits 4x3x512x512, orders (2,0), (0,2), (2,2);
- 3D: logits 2x2x112x112x80, orders (2,0,0), (0,2,0), (0,0,2), (2,2,2).

Variants: CE+Dice alone, as MONAI ``DiceCELoss`` on the logits ("DiceCELoss", the unshared path
``SegmentationLoss(share_activation=False)``) and as ``SegmentationLoss``'s default ("shared": one
log-softmax per call, CE = NLL of it, Dice on its exp); plus RM written literally from the paper
(weights rebuilt on every call, one ``(mu(P) - mu(G))^2`` per order: "naive"); plus rmseg's
``ResidualMomentLoss`` on the logits (one cached fused weight map, its own softmax, autograd: "fused");
plus the same loss on the shared probabilities (``from_probabilities``, autograd: "shared"). The variants of one case are timed in interleaved rounds (one call of each
per round), so a load change on a shared machine hits all of them alike. Each variant with RM is
compared with the CE+Dice of its own path (``added_vs_ce_dice_pct``) and with ``DiceCELoss``
(``added_vs_dicece_pct``). The naive, fused and shared values are compared and the difference recorded.

Training step: one SGD step (zero_grad, forward, loss, backward, step) of MONAI's 2D UNet in the
Table 1 setting (in 3, out 3, strides 2, batch 4, ``--step-size`` pixels square; by default the widths
of ``configs/model/unet2d.yaml``, 64..1024, and 16..256 with ``--quick`` or ``--step-channels``), with
CE+Dice and with CE+Dice+RM, unshared and shared.

    python -m benchmarks.rm_loss [--quick] [--repeats N] [--step-repeats N] [--step-channels 16,32,64,128,256]
        [--device auto|cpu|cuda]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.nets import UNet
from monai.networks.utils import one_hot
from omegaconf import OmegaConf
from torch import nn

from benchmarks.common import bench_parser, markdown_table, time_interleaved, write_report
from rmseg.losses import ResidualMomentLoss, SegmentationLoss
from rmseg.losses._utils import prepare_probabilities_and_onehot

ORDERS_2D = [(2, 0), (0, 2), (2, 2)]
ORDERS_3D = [(2, 0, 0), (0, 2, 0), (0, 0, 2), (2, 2, 2)]
NO_GPU = "not measured: no GPU on this machine"
PROTOCOL_CHANNELS = tuple(OmegaConf.load(Path(__file__).parents[1] / "configs/model/unet2d.yaml").channels)
REDUCED_CHANNELS = (16, 32, 64, 128, 256)


class NaiveResidualMomentLoss(nn.Module):
    """Eq. 4 written literally: for each order, build ``C_i^p C_j^q`` anew and sum ``(mu(P) - mu(G))^2``."""

    def __init__(self, orders):
        super().__init__()
        self.orders = [tuple(o) for o in orders]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = prepare_probabilities_and_onehot(input, target, "softmax", True, False)
        spatial = input.shape[2:]
        total = input.new_zeros(input.shape[0])
        for order in self.orders:
            weight = torch.ones((), dtype=input.dtype, device=input.device)
            for axis, (size, power) in enumerate(zip(spatial, order)):
                coord = (torch.arange(size, dtype=input.dtype, device=input.device) + 0.5 - size / 2) / size
                view = [size if a == axis else 1 for a in range(len(spatial))]
                weight = weight * coord.pow(power).view(view)
            total = total + (weight * probs - weight * onehot).square().flatten(1).sum(dim=1)
        return total.mean()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


BASE_UNSHARED, BASE_SHARED = "CE+Dice (DiceCELoss)", "CE+Dice shared"


def loss_variants(orders) -> dict[str, nn.Module]:
    """Name -> loss taking ``(logits, labels)``; ``alone`` variants take the logits (``RM shared alone``
    takes probabilities, see :func:`bench_losses`)."""
    naive, fused = NaiveResidualMomentLoss(orders), ResidualMomentLoss(orders)
    variants = {
        BASE_UNSHARED: SegmentationLoss(share_activation=False),
        BASE_SHARED: SegmentationLoss(share_activation=True),
        "CE+Dice+RM naive": SegmentationLoss([naive], share_activation=False),
        "CE+Dice+RM fused": SegmentationLoss([fused], share_activation=False),
        "CE+Dice+RM shared": SegmentationLoss([fused], share_activation=True),
        "RM naive alone": naive,
        "RM fused alone": fused,
        "RM shared alone": fused,
    }
    return variants


def baseline_of(name: str) -> str:
    """The CE+Dice row a variant is compared with: the shared one for shared variants."""
    return BASE_SHARED if "shared" in name else BASE_UNSHARED


def bench_losses(case: str, shape, orders, device, repeats: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).to(device)
    probs = torch.softmax(logits.detach(), dim=1).requires_grad_(True)
    labels_one_hot = one_hot(labels, num_classes=shape[1], dim=1, dtype=probs.dtype)  # as SegmentationLoss shares it
    variants = loss_variants(orders)

    def step(name: str, loss: nn.Module) -> Callable[[], None]:
        if name.startswith("RM shared"):  # RM's own cost on given probabilities: no activation
            def run() -> None:
                probs.grad = None
                loss.from_probabilities(probs, labels, check_range=False, one_hot=labels_one_hot).backward()
        else:
            def run() -> None:
                logits.grad = None
                loss(logits, labels).backward()

        return run

    times = time_interleaved({name: step(name, loss) for name, loss in variants.items()}, repeats, 1, device)
    with torch.no_grad():
        naive = variants["RM naive alone"](logits, labels).item()
        fused = variants["RM fused alone"](logits, labels).item()
        shared = variants["RM shared alone"].from_probabilities(probs, labels).item()
        base_values = {name: variants[name](logits, labels).item() for name in (BASE_UNSHARED, BASE_SHARED)}
    dicece = median(times[BASE_UNSHARED])
    rows = []
    for name, values in times.items():
        base = median(times[baseline_of(name)])
        alone = name.endswith("alone")
        rows.append(
            {
                "case": case,
                "variant": name,
                "device": str(device),
                "median_ms": 1e3 * median(values),
                "min_ms": 1e3 * min(values),
                "baseline": baseline_of(name),
                "added_vs_ce_dice_pct": 100 * (median(values) - (0 if alone else base)) / base,
                "added_vs_dicece_pct": 100 * (median(values) - (0 if alone else dicece)) / dicece,
                "repeats": len(values),
                "rm_naive_value": naive,
                "rm_fused_value": fused,
                "rm_shared_value": shared,
                "rm_rel_diff": max(abs(naive - fused), abs(shared - fused)) / abs(fused),
                "ce_dice_rel_diff": abs(base_values[BASE_SHARED] - base_values[BASE_UNSHARED]) / base_values[BASE_UNSHARED],
            }
        )
    return rows


def bench_training_step(size: int, channels: tuple[int, ...], device, repeats: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((4, 3, size, size), generator=generator).to(device)
    labels = torch.randint(0, 3, (4, 1, size, size), generator=generator).to(device)
    model = UNet(spatial_dims=2, in_channels=3, out_channels=3, channels=channels, strides=(2,) * (len(channels) - 1))
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    fused = ResidualMomentLoss(ORDERS_2D)
    losses = {
        f"UNet step {BASE_UNSHARED}": SegmentationLoss(share_activation=False),
        f"UNet step {BASE_SHARED}": SegmentationLoss(share_activation=True),
        "UNet step CE+Dice+RM fused": SegmentationLoss([fused], share_activation=False),
        "UNet step CE+Dice+RM shared": SegmentationLoss([fused], share_activation=True),
    }

    logits = torch.randn((4, 3, size, size), generator=generator).to(device).requires_grad_(True)
    probs = torch.softmax(logits.detach(), dim=1).requires_grad_(True)
    labels_one_hot = one_hot(labels, num_classes=3, dim=1, dtype=probs.dtype)

    def step(loss: nn.Module) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss(model(images), labels).backward()
            optimizer.step()

        return run

    def rm_alone(loss: nn.Module, shared: bool) -> Callable[[], None]:
        def run() -> None:
            if shared:
                probs.grad = None
                loss.terms[0].from_probabilities(probs, labels, check_range=False, one_hot=labels_one_hot).backward()
            else:
                logits.grad = None
                loss.terms[0](logits, labels).backward()

        return run

    fns = {name: step(loss) for name, loss in losses.items()}
    fns |= {
        name.replace("UNet step CE+Dice+", "") + " alone": rm_alone(loss, "shared" in name)
        for name, loss in losses.items()
        if loss.terms
    }
    times = time_interleaved(fns, repeats, 1, device)
    rows = []
    for name, values in times.items():
        base = median(times[f"UNet step {baseline_of(name)}"])
        if name.endswith("alone"):
            # RM's own fwd+bwd time over a step of CE+Dice plus that time: robust to load noise.
            share = 100 * median(values) / (base + median(values))
        elif "RM" in name:
            share = 100 * (median(values) - base) / median(values)
        else:
            share = None
        rows.append(
            {
                "case": f"UNet {channels[0]}..{channels[-1]} 2D step 4x3x{size}x{size}",
                "variant": name,
                "device": str(device),
                "median_ms": 1e3 * median(values),
                "min_ms": 1e3 * min(values),
                "baseline": f"UNet step {baseline_of(name)}",
                "added_vs_ce_dice_pct": None if name.endswith("alone") else 100 * (median(values) - base) / base,
                "rm_share_of_step_pct": share,
                "repeats": len(values),
            }
        )
    return rows


def summary_lines(rows: list[dict]) -> str:
    """One bullet per case and RM variant: RM's added share next to the target, from the difference of
    medians and from RM's own time (the ``alone`` row), which load noise disturbs less."""
    alone = {(r["case"], r["variant"]): r for r in rows if r["variant"].endswith("alone")}
    lines = []
    for row in rows:
        name = row["variant"]
        if "RM" not in name or "naive" in name or name.endswith("alone"):
            continue
        own = alone.get((row["case"], name.split("CE+Dice+", 1)[1] + " alone"))
        if row.get("rm_share_of_step_pct") is not None:
            target, what = 1.0, "of the step"
            by_diff, by_own = row["rm_share_of_step_pct"], own and own["rm_share_of_step_pct"]
        else:
            target, what = 20.0, f"over {row['baseline']}"
            by_diff, by_own = row["added_vs_ce_dice_pct"], own and own["added_vs_ce_dice_pct"]
        verdicts = ["met" if v <= target else "missed" for v in (by_diff, by_own) if v is not None]
        verdict = verdicts[0] if len(set(verdicts)) == 1 else "unclear (the two estimates disagree)"
        lines.append(
            f"- {row['case']}, {name}: RM adds {by_diff:.1f}% {what} by difference of medians, "
            f"{by_own:.1f}% by its own time; target <= {target:g}%: {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = bench_parser("Residual moment loss: cost over CE+Dice, naive vs fused vs shared, share of a UNet step")
    parser.add_argument("--step-size", type=int, default=None, help="UNet step image size (default 512; 128 with --quick)")
    parser.add_argument("--skip-step", action="store_true", help="do not time the UNet training step")
    parser.add_argument("--step-repeats", type=int, default=None, help="UNet step repeats (default min(repeats, 5))")
    parser.add_argument(
        "--step-channels", default=None,
        help=f"UNet widths, comma-separated (default the protocol's {','.join(map(str, PROTOCOL_CHANNELS))}; "
        f"{','.join(map(str, REDUCED_CHANNELS))} with --quick)",
    )
    parser.add_argument("--note", default="", help="a sentence on the run's conditions, written into the report")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7 if not args.full else 15)
    if repeats < 1:
        raise ValueError(f"--repeats {repeats} must be >= 1")
    if args.step_repeats is not None and args.step_repeats < 1:
        raise ValueError(f"--step-repeats {args.step_repeats} must be >= 1")
    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(args.device)]
        if devices[0].type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device} asked for but CUDA is not available; use auto or cpu")
    shape_2d, shape_3d = ((4, 3, 128, 128), (2, 2, 48, 48, 32)) if args.quick else ((4, 3, 512, 512), (2, 2, 112, 112, 80))
    step_size = args.step_size or (128 if args.quick else 512)
    if args.step_channels is None:
        step_channels = REDUCED_CHANNELS if args.quick else PROTOCOL_CHANNELS
    else:
        try:
            step_channels = tuple(int(c) for c in args.step_channels.split(","))
        except ValueError:
            raise ValueError(f"--step-channels {args.step_channels!r}: give integers separated by commas, e.g. 16,32,64") from None
        if len(step_channels) < 2 or min(step_channels) < 1:
            raise ValueError(f"--step-channels {args.step_channels!r}: give at least two positive widths, e.g. 16,32,64")

    rows: list[dict] = []
    for device in devices:
        rows += bench_losses(f"2D {'x'.join(map(str, shape_2d))}, 3 orders", shape_2d, ORDERS_2D, device, repeats)
        rows += bench_losses(f"3D {'x'.join(map(str, shape_3d))}, 4 orders", shape_3d, ORDERS_3D, device, repeats)
        if not args.skip_step:
            rows += bench_training_step(step_size, step_channels, device, args.step_repeats or max(1, min(repeats, 5)))

    table = markdown_table(
        rows,
        [
            "case", "variant", "device", "median_ms", "min_ms", "added_vs_ce_dice_pct", "added_vs_dicece_pct",
            "rm_share_of_step_pct", "repeats",
        ],
    )
    gpu_line = "" if any(d.type == "cuda" for d in devices) else f"\nGPU: {NO_GPU}.\n"
    note = f"\n{args.note}\n" if args.note else ""
    markdown = (
        "# Residual moment loss: cost\n\n"
        "Forward + backward w.r.t. the logits (loss cases) or one SGD step of the UNet; medians over "
        "interleaved repeats, milliseconds. `added_vs_ce_dice_pct` = (variant - CE+Dice of its own path) / "
        "that CE+Dice, the path being `shared` (one softmax for CE, Dice and RM: `SegmentationLoss`'s "
        "default) or not (MONAI `DiceCELoss` on the logits, RM with its own softmax); `added_vs_dicece_pct` "
        "compares every row with `DiceCELoss`. `rm_share_of_step_pct` = (step with RM - step without, same "
        "path) / step with RM, and for the `alone` rows of the step case RM alone / (step without RM + RM "
        "alone), which a loaded machine disturbs less. For the `alone` rows the added share is RM alone / "
        "CE+Dice (RM's own time, free of the noise of a difference); `RM shared alone` is RM on given "
        "probabilities and one-hot labels (`from_probabilities`, as inside the shared loss: no activation). Targets: RM adds <= 20% to CE+Dice and <= 1% "
        "to a training step.\n\n"
        f"## Summary\n\n{summary_lines(rows)}\n\n"
        f"## All rows\n\n{table}\n{gpu_line}{note}\n"
        "naive = Eq. 4 literally (weights rebuilt every call, one term per order); fused = "
        "`ResidualMomentLoss` on the logits (one cached weight map, autograd); shared = the same loss on "
        "`SegmentationLoss`'s shared probabilities (`from_probabilities`, autograd). Largest "
        "relative difference between naive, fused and shared RM values: "
        f"{max(r.get('rm_rel_diff') or 0.0 for r in rows):.2e}; between shared CE+Dice and `DiceCELoss`: "
        f"{max(r.get('ce_dice_rel_diff') or 0.0 for r in rows):.2e}.\n"
    )
    data = {
        "rows": rows,
        "repeats": repeats,
        "devices": [str(d) for d in devices],
        "gpu": None if any(d.type == "cuda" for d in devices) else NO_GPU,
        "step_size": None if args.skip_step else step_size,
        "step_channels": None if args.skip_step else list(step_channels),
    }
    md_path, _ = write_report("rm_loss", markdown, data, device=devices[-1], out_dir=args.out_dir)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
