"""Prepare LA 2018 for training.

    python scripts/prepare_la.py --root /data/la2018 [--out DIR] [--margin 10 20] [--seed 0]

UA-MT's h5 layout (train.list, test.list, 2018LA_Seg_Training Set/<id>/mri_norm2.h5) needs no
preparation: it is checked against the paper's 16/20 protocol. A raw challenge release
(<id>/lgemri.nrrd, laendo.nrrd, with UA-MT's train.list and test.list beside them) is converted with
UA-MT's preprocessing into that layout under --out (default data/prepared/la_real_m<lo>-<hi>_s<seed>).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmseg.data import LAConfig, default_prepared_dir, la


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--margin", type=int, nargs=2, default=[10, 20], metavar=("LOW", "HIGH"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=16)
    args = parser.parse_args(argv)
    root = args.root
    if not la.is_h5_layout(root):
        cfg = LAConfig(root=str(root), margin=args.margin, seed=args.seed)
        root = la.prepare_raw(root, args.out or default_prepared_dir(cfg), tuple(args.margin), args.seed)
    train, test = la.split_cases(root, "train", args.num_train), la.split_cases(root, "test")
    for case in train + test:
        image_shape, label_shape = la.h5_shapes(case["path"])
        if image_shape != label_shape:
            raise ValueError(f"{case['path']}: image {image_shape} and label {label_shape} differ; re-download it")
    print(f"{root}: {len(train)} training / {len(test)} test cases ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
