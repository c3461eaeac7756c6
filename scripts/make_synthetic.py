"""Write the synthetic stand-ins (normally written on first use by the gs_synthetic / la_synthetic configs).

    python scripts/make_synthetic.py gs --out data/synthetic/gs [--num-train 12 --num-test 8 --shape 256 256 --seed 0]
    python scripts/make_synthetic.py la --out data/synthetic/la [--num-train 8 --num-test 4 --shape 96 96 48]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmseg.data.synthetic import write_gs_synthetic, write_la_synthetic

DEFAULTS = {"gs": (12, 8, [256, 256]), "la": (8, 4, [96, 96, 48])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DEFAULTS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-test", type=int)
    parser.add_argument("--shape", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_train, num_test, shape = DEFAULTS[args.dataset]
    shape = args.shape or shape
    if len(shape) != len(DEFAULTS[args.dataset][2]) or min(shape) < 8:
        parser.error(f"--shape {shape}: give {len(DEFAULTS[args.dataset][2])} sizes of at least 8")
    write = write_gs_synthetic if args.dataset == "gs" else write_la_synthetic
    out = write(args.out, args.num_train or num_train, args.num_test or num_test, tuple(shape), args.seed)
    print(f"{out}: synthetic {args.dataset} written (or already there with these parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
