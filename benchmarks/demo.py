"""Wall time of ``make demo`` (``python -m rmseg.cli.demo``) from a cold start: synthetic data written,
every row of Tables 1 and 2 trained and evaluated, tables printed. Target: <= 5 minutes on 2 CPU cores.

Each repeat runs the demo in a fresh process with fresh results and data folders (nothing cached).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import REPO_ROOT, bench_parser, markdown_table, write_report

TARGET_S = 300.0


def run_once() -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "rmseg.cli.demo", "--results", f"{tmp}/results", "--data-dir", f"{tmp}/data"],
            cwd=REPO_ROOT, capture_output=True, text=True,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"demo failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        rows = sum(1 for line in proc.stdout.splitlines() if line.startswith("  table"))
        return {"wall_s": wall, "rows": rows}


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    repeats = args.repeats or (1 if args.quick else 2 if not args.full else 3)
    runs = [run_once() for _ in range(repeats)]
    median = statistics.median(r["wall_s"] for r in runs)
    rows = [{"repeat": i, "rows trained": r["rows"], "wall (s)": r["wall_s"]} for i, r in enumerate(runs)]
    markdown = "\n".join([
        "# make demo: wall time from a cold start",
        "",
        f"Median over {repeats} repeat(s): **{median:.1f} s** (target <= {TARGET_S:.0f} s on 2 CPU cores: "
        f"{'met' if median <= TARGET_S else 'NOT met'}). Each repeat: fresh process, fresh data and results folders.",
        "",
        markdown_table(rows, ["repeat", "rows trained", "wall (s)"]),
    ])
    md, _ = write_report("demo", markdown, {"median_wall_s": median, "target_s": TARGET_S, "runs": runs},
                         device="cpu", out_dir=args.out_dir)
    print(md.read_text())


if __name__ == "__main__":
    main()
