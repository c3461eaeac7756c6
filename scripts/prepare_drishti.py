"""Prepare a Drishti-GS1 release (official layout or a variant) for training.

    python scripts/prepare_drishti.py --root /data/drishti-gs1 [--out DIR] [--image-size 512 512] [--threshold 128]

Writes resized images, label maps (0 background, 1 disc outside cup, 2 cup) and dataset.json into
--out (default data/prepared/gs_real_<H>x<W>_t<threshold>). Same parameters again: nothing to do;
other parameters into an existing folder: refused (choose another --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rmseg.data import DrishtiConfig, default_prepared_dir, drishti


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder holding Drishti-GS1_files")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--image-size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--threshold", type=int, default=128, help="soft map > threshold (128: >= 3 of 4 experts)")
    parser.add_argument("--max-size-mismatch", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = DrishtiConfig(root=str(args.root), image_size=args.image_size, threshold=args.threshold,
                        max_size_mismatch=args.max_size_mismatch)
    out = drishti.prepare(args.root, args.out or default_prepared_dir(cfg), tuple(args.image_size), args.threshold,
                          args.max_size_mismatch)
    split = json.loads((out / "dataset.json").read_text())["split"]
    print(f"{out}: {len(split['train'])} training / {len(split['test'])} test cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
