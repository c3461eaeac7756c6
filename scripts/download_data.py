"""Download (when the network allows), verify and prepare the real data: ``make data``.

    python scripts/download_data.py [--root DIR] [--datasets la2018 drishti-gs1]

``--root`` defaults to $RMSEG_DATA_ROOT, else data/ under $RMSEG_ROOT or the current directory. Data already there is
not downloaded again. Drishti-GS is prepared into data/prepared/ at the paper's 512x512.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rmseg.data import DATA_DIR, DrishtiConfig, default_prepared_dir, drishti, la
from rmseg.data.download import NO_NETWORK_HELP, SOURCES, NoNetworkError, fetch, is_present, verify_la


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("RMSEG_DATA_ROOT", DATA_DIR)))
    parser.add_argument("--datasets", nargs="+", choices=sorted(SOURCES), default=sorted(SOURCES))
    args = parser.parse_args(argv)
    for name in args.datasets:
        root = args.root / name
        if is_present(name, root):
            print(f"{name}: found at {root}")
        else:
            try:
                fetch(SOURCES[name], args.root)
            except NoNetworkError as error:
                print(NO_NETWORK_HELP.format(error=error), file=sys.stderr)
                return 2
            print(f"{name}: downloaded into {root}")
        if name == "la2018":
            print(f"{name}: {verify_la(root)} files of the 16/20 protocol match their pinned SHA-256")
            train, test = la.split_cases(root, "train", 16), la.split_cases(root, "test")
            print(f"{name}: ready ({len(train)} training / {len(test)} test cases; UA-MT's h5 need no preparation)")
        else:
            cfg = DrishtiConfig(root=str(root))
            out = drishti.prepare(root, default_prepared_dir(cfg), tuple(cfg.image_size), cfg.threshold, cfg.max_size_mismatch)
            print(f"{name}: prepared into {out} (SHA-256 of every source file in dataset.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
