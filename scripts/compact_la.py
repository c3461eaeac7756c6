"""Write a compact copy of LA 2018's protocol cases (float16 images, compressed), e.g. for a machine
that can receive less data than the float32 files take.

    python scripts/compact_la.py --root ../shared/data/la2018 --out data/la2018_compact

Copies the first --num-train ids of train.list and all of test.list from UA-MT's h5 layout into the
same layout under --out, with --out/dataset.json recording the sources' SHA-256 and each image's
round-trip error (rmseg.data.la.write_compact). Train or evaluate on it with data.root=<out>.
Running it again with the same arguments does nothing; an --out holding anything else is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rmseg.data import la
from rmseg.data.prepared import MANIFEST


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="UA-MT layout: holds train.list and test.list")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-train", type=int, default=16)
    parser.add_argument("--image-dtype", choices=la.COMPACT_IMAGE_DTYPES, default="float16")
    parser.add_argument("--compression", choices=("gzip", "lzf"), default="gzip")
    parser.add_argument("--level", type=int, default=4, help="gzip level (4 was the smallest on the real cases)")
    args = parser.parse_args(argv)
    if not la.is_h5_layout(args.root):
        parser.error(f"{args.root} is not UA-MT's h5 layout (train.list and '{la.CASES_DIR}/'); "
                     "a raw release is converted first by scripts/prepare_la.py")
    existed = (args.out / MANIFEST).is_file()
    start = time.perf_counter()
    out = la.write_compact(args.root, args.out, args.num_train, args.image_dtype, args.compression, args.level)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / MANIFEST).read_text())
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    errors = [c["image_max_abs_error"] for c in manifest["cases"].values()]
    relative = [c["image_max_rel_error"] for c in manifest["cases"].values()]
    split = manifest["split"]
    print(f"{out}: {len(split['train'])} training + {len(split['test'])} test cases, "
          f"image {manifest['image']['dtype']} {manifest['image']['compression']}")
    print(f"size: {manifest['source_bytes'] / 1e6:.2f} MB of source h5 files -> {total / 1e6:.2f} MB "
          f"({total / 2**20:.2f} MiB, all files under {out}; ratio {total / manifest['source_bytes']:.3f})")
    print(f"image max abs error per case: {min(errors):.3g} .. {max(errors):.3g}; "
          f"max rel error: {max(relative):.3g}; labels equal")
    done = "already there with these parameters: nothing written" if existed else "written"
    print(f"{done} in {seconds:.1f} s; use it with data.root={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
