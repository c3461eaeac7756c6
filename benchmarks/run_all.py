"""Run every benchmark (``benchmarks/*.py``) on the present device, one after another (``make bench``).

Each runs as ``python -m benchmarks.<name>`` from the repository root with the options given here;
``time_to_table`` runs last since it reads the training and inference reports. ``--quick`` gives the
smoke-sized runs and writes into ``results/benchmarks/quick/`` so the full reports stay in place; it
leaves out ``curve_check``, which trains whole runs and has no smoke-sized version.
A failing benchmark does not stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_BENCHMARKS = {"__init__", "common", "run_all"}
LAST = ("time_to_table",)
NOT_QUICK = {"curve_check"}


def benchmark_names(folder: Path = REPO_ROOT / "benchmarks", quick: bool = False) -> list[str]:
    """Module names of the benchmark scripts in ``folder``, dependencies (time_to_table) last; ``quick``:
    those with a smoke-sized run."""
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem not in NOT_BENCHMARKS | (NOT_QUICK if quick else set()))
    return [n for n in names if n not in LAST] + [n for n in LAST if n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs into results/benchmarks/quick/")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:index]")
    parser.add_argument("--out-dir", type=Path, default=None, help="default results/benchmarks (quick: .../quick)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmarks, e.g. training inference")
    args = parser.parse_args(argv)
    names = benchmark_names(quick=args.quick)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"--only {unknown}: no such benchmark; available: {names}")
        names = [n for n in names if n in args.only]
    out = args.out_dir or REPO_ROOT / "results" / "benchmarks" / ("quick" if args.quick else "")
    failed = []
    for name in names:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--device", args.device, "--out-dir", str(out)]
        if args.quick:
            cmd.append("--quick")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
        print(f"== {name}: exit {rc} after {time.perf_counter() - start:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
