"""Shared helpers of the rmseg benchmarks: device choice, timing, peak memory, reports.

Every benchmark script times with :func:`time_call` (median of repeats, device synchronised),
describes the machine with :func:`machine_info` and writes its figures with :func:`write_report`
into ``results/benchmarks/<name>.{md,json}`` (atomically; an older report of the same name is moved
to ``results/benchmarks/archive/`` first, so no earlier run is lost).

Typical use::

    from benchmarks.common import bench_parser, pick_device, time_call, summarize, write_report
    args = bench_parser("what this measures").parse_args()
    device = pick_device(args.device)
    stats = summarize(time_call(step, repeats=args.repeats, warmup=1, device=device))
    write_report("mine", markdown, {"rows": rows}, device=device, out_dir=args.out_dir)
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rmseg.engine.provenance import cpu_has_bf16, cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results" / "benchmarks"


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` gives CUDA when present, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` are taken as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device name; use auto, cpu or cuda[:index]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for but CUDA is not available; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not supported; use auto, cpu or cuda[:index]")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU), so wall-clock timings are complete."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu"
) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls.

    The device is synchronised before and after every timed call.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    if warmup < 0:
        raise ValueError(f"warmup={warmup} must be >= 0")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device | str
) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds of one call per function after ``warmup`` rounds.

    Interleaving keeps a change in the machine's load from favouring one variant over another.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: Sequence[float]) -> dict[str, float]:
    """``{"median_s", "min_s", "max_s", "repeats"}`` of a list of timings in seconds."""
    if len(times) == 0:
        raise ValueError("summarize() needs at least one timing, got an empty list")
    return {
        "median_s": float(statistics.median(times)),
        "min_s": float(min(times)),
        "max_s": float(max(times)),
        "repeats": len(times),
    }


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_free_heap() -> None:
    """Hand memory freed by earlier work back to the OS (glibc ``malloc_trim``), so that the resident
    set before a measurement does not hide the allocations of the measured call; no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak extra memory taken while ``fn()`` runs, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the call (exact).
    CPU: PyTorch keeps no peak statistic for host memory, so freed heap is first returned to the OS,
    then the resident set size is sampled every millisecond in a thread and the peak above the size
    before the call is returned (approximate: peaks shorter than 1 ms are missed).
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    _release_free_heap()
    before = _rss_bytes()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return int(max(peak, _rss_bytes()) - before)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Machine, library versions, commit and UTC date that a benchmark ran with."""
    import monai
    import numpy

    device = torch.device(device)
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_bf16": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "commit": _git_commit(),
        "load_avg_1_5_15_min": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "gpu": None,
        "cuda": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_markdown(info: dict[str, Any]) -> str:
    """One Markdown line describing the machine of :func:`machine_info`."""
    where = info["gpu"] or f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"
    return (
        f"Measured {info['date_utc']} on {where}; device `{info['device']}`; Python {info['python']}, "
        f"torch {info['torch']}, MONAI {info['monai']}, numpy {info['numpy']}; commit `{info['commit']}`; "
        f"load average (1/5/15 min) {info['load_avg_1_5_15_min']} when written."
    )


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) restricted to ``columns``; floats get 4 significant digits,
    ``None`` is shown as an empty cell."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(
    name: str,
    markdown: str,
    data: dict[str, Any],
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.md`` and ``<name>.json`` (default ``results/benchmarks/``).

    The JSON holds ``data`` plus ``"machine": machine_info(device)``; the Markdown gets a machine line
    appended. An existing report of that name is first moved to ``<out_dir>/archive/<name>.<date>.*``;
    each file is written to a temporary name and renamed when complete. Returns the two paths.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"report name {name!r} must be a plain file stem such as 'training'")
    if "machine" in data:
        raise ValueError("data already has a 'machine' key; write_report adds it, remove it from data")
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info(device)
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    old = [p for p in (md_path, json_path) if p.exists()]
    if old:
        archive = out / "archive"
        archive.mkdir(exist_ok=True)
        stamp = _dt.datetime.fromtimestamp(old[0].stat().st_mtime, _dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        for p in old:
            shutil.move(p, archive / f"{name}.{stamp}{p.suffix}")
    _atomic_write(json_path, json.dumps({**data, "machine": info}, indent=2, default=str) + "\n")
    _atomic_write(md_path, markdown.rstrip() + "\n\n" + machine_markdown(info) + "\n")
    return md_path, json_path


def bench_parser(description: str) -> argparse.ArgumentParser:
    """Command-line options shared by every benchmark: --quick, --full, --device, --repeats, --out-dir."""
    parser = argparse.ArgumentParser(description=description)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest sizes and fewest repeats (smoke run)")
    size.add_argument("--full", action="store_true", help="more repeats and sizes (slow on CPU)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:index]")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default depends on mode)")
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS_DIR, help="where the .md/.json reports go (default results/benchmarks)"
    )
    return parser
