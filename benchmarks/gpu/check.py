"""rmseg's CUDA path measured in one call of at most 8 minutes (``scripts/gpu_check.sh``; docs/gpu.md).

    OUT=/tmp/gpu scripts/gpu_check.sh                       # on a CUDA machine, from the repository root
    OUT=/tmp/gpu scripts/gpu_check.sh --device cpu --tiny   # dry run of every step on tiny sizes (a test)

The wrapper installs the bundle's wheels (``make gpu-bundle``) into a temporary folder and runs this driver.
Steps, in this order, each a subprocess in its own time box, all within ``--budget`` seconds (a step that
would start with less than its minimum left is skipped, and the report says so):

- ``tests``: pytest of ``tests/test_cuda.py`` and every test parametrized on CUDA;
- ``training``, ``inference``, ``rm_loss``: the benchmark scripts on the device (protocol sizes, few repeats);
- ``table1``: ``experiment=table1/rm20_02_22`` with the paper's protocol (2000 iterations at 512x512), with the
  fastest variant of ``training`` whose short curve matched fp32, then in fp32, compared as
  ``benchmarks.curve_check`` compares whole runs;
- ``table2``: ``experiment=table2/rm4`` (the V-Net, batch 4, 112x112x80 patches) for ``--table2-iters``, likewise;
- ``packing``: several table runs side by side on the device (separate processes) against one alone.

From these it estimates each table's wall time (rows x 3 seeds, one run at a time and packed). Written into
``--out`` after every step (at most 8 files): ``gpu_check.md`` (summary), ``gpu_check.json`` (every figure),
``benchmarks.json`` (the benchmark reports; ``--restore`` writes them into ``results/benchmarks/``) and
``logs.md`` (each step's command and the end of its output).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, RESULTS_DIR, markdown_table
from benchmarks.curve_check import compare_runs, loss_curve
from benchmarks.training import SETTINGS, VARIANTS
from rmseg.evaluation.records import read_times

PROTOCOL = {"table1": {"iterations": 2000, "test_cases": 51, "target_min": 10},  # targets: one H200, packed
            "table2": {"iterations": 6000, "test_cases": 20, "target_min": 45}}
SEEDS = 3
DEFAULT_VARIANT = "amp_bf16_channels_last"
TESTS = ["tests/test_cuda.py", "tests/test_rival_losses.py", "-k", "cuda"]
# The tiny sizes of the dry run (those of tests/test_train.py).
TINY = {
    "table1": ("data=gs_synthetic", "data.image_size=[32,32]", "data.synthetic.shape=[48,48]",
               "data.synthetic.num_train=4", "data.synthetic.num_test=2", "data.batch_size=2",
               "model.channels=[4,8,16]", "model.strides=[2,2]", "trainer.num_threads=1"),
    "table2": ("data=la_synthetic", "data.patch_size=[16,16,16]", "data.synthetic.shape=[24,24,16]",
               "data.synthetic.num_train=2", "data.synthetic.num_test=1", "data.num_train=2", "data.batch_size=2",
               "model.base_filters=2", "eval.roi_size=[16,16,16]", "eval.strides=[8,8,8]", "trainer.num_threads=1"),
}
DATA = {"table1": "drishti-gs1", "table2": "la2018"}
STEPS = ("tests", "benchmarks", "tables", "packing", "curves")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: (.*)$", re.M)


@dataclass
class Plan:
    """What each step runs: the GPU plan (protocol sizes) or the tiny dry run."""

    benchmarks: dict[str, list[str]]  # benchmark script -> its arguments
    iterations: dict[str, int | None]  # per table; None: the protocol's
    table_overrides: dict[str, tuple[str, ...]]
    packing: list[tuple[str, int, int]]  # (table, runs side by side, iterations)
    steps: dict[str, tuple[float, float]]  # step -> (time box, least time left for it to start), seconds
    caps: dict[str, float]  # time box of one process: a benchmark script or one run of a table
    parallel: bool  # tiny: the processes of a step side by side (less start-up time on a small CPU)


def make_plan(tiny: bool, table2_iters: int) -> Plan:
    if tiny:
        return Plan(
            benchmarks={
                "training": ["--quick", "--settings", "table1", "--variants", "fp32", "amp_bf16", "--repeats", "1"],
                "inference": ["--quick", "--repeats", "1", "--sw-batch-sizes", "2", "--amp-sw-batch-sizes", "2",
                              "--channels-last-sw-batch-sizes", "2"],
                "rm_loss": ["--quick", "--repeats", "1", "--skip-step"],
                "time_to_table": ["--quick"],
            },
            iterations={"table1": 4, "table2": 4},
            table_overrides={s: (*TINY[s], "trainer.log_every=1", "trainer.checkpoint_every=4") for s in TINY},
            packing=[("table1", 2, 4)],
            steps=dict.fromkeys(("setup", *STEPS), (600.0, 0.0)),  # wiring, not timing: a busy CPU may be slow
            caps={},
            parallel=True,
        )
    no_compile = [v for v in VARIANTS if v != "compile"]  # compile: tests/test_cuda.py (minutes at these sizes)
    return Plan(
        benchmarks={"training": ["--repeats", "3", "--variants", *no_compile], "inference": ["--repeats", "2"],
                    "rm_loss": ["--repeats", "5"], "time_to_table": ["--repeats", "3"]},
        iterations={"table1": None, "table2": table2_iters},
        table_overrides={"table1": (), "table2": ()},
        packing=[("table1", 4, 300), ("table2", 3, 100)],
        steps={"setup": (60, 0), "tests": (150, 20), "benchmarks": (130, 30), "tables": (170, 60),
               "packing": (80, 40), "curves": (170, 40)},
        caps={"training": 60, "inference": 35, "rm_loss": 25, "time_to_table": 20, "table1": 110, "table2": 60},
        parallel=False,
    )


@dataclass
class Proc:
    """One subprocess of a step: its command, log file and outcome."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] | None = None
    cap: float = float("inf")  # its own time box, seconds, within the step's
    rc: int | None = None
    wall_s: float | None = None
    timed_out: bool = False
    popen: Any = field(default=None, repr=False)
    started: float = 0.0

    def start(self) -> Proc:
        self.started = time.perf_counter()
        with open(self.log, "w") as log:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(self.cmd, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        return self

    def wait(self, deadline: float) -> Proc:
        """Wait until ``deadline`` (perf_counter); past it, end the process group (SIGTERM, then SIGKILL)."""
        try:
            self.rc = self.popen.wait(timeout=max(deadline - time.perf_counter(), 0.1))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.popen.pid, sig)
                    self.rc = self.popen.wait(timeout=grace)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
        self.wall_s = time.perf_counter() - self.started
        return self

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "rc": self.rc, "wall_s": round(self.wall_s or 0.0, 2), "timed_out": self.timed_out,
                "cmd": " ".join(self.cmd[1:])}


def run_all(procs: list[Proc], deadline: float, parallel: bool) -> list[Proc]:
    """Run ``procs`` one after another (or side by side), none past ``deadline`` nor its own ``cap``; a
    process not started before the deadline keeps ``rc=None``."""
    if parallel:
        for p in procs:
            p.start()
        return [p.wait(min(deadline, p.started + p.cap)) for p in procs]
    for p in procs:
        if time.perf_counter() < deadline - 1:
            p.start().wait(min(deadline, p.started + p.cap))
    return procs


# ---------------------------------------------------------------- run folders


def parse_run(run: Path) -> dict[str, Any]:
    """What a (possibly unfinished) run folder tells: iterations, training seconds, seconds per iteration
    from the log's timestamps (between the first and last logged iteration), evaluation seconds."""
    final = (run / "summary.json").is_file()
    folder = run if final else run.parent / f".{run.name}.tmp"
    out: dict[str, Any] = {"complete": final, "folder": str(folder)}
    log = folder / "train.log"
    if not log.is_file():
        return out
    stamps = [(dt.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), msg) for t, msg in LOG_LINE.findall(log.read_text())]
    its = [(t, int(m.group(1))) for t, msg in stamps if (m := re.match(r"iteration (\d+)/\d+ loss", msg))]
    out["last_logged_iteration"] = its[-1][1] if its else 0
    if len(its) >= 2 and its[-1][1] > its[0][1]:
        out["s_per_iter_log"] = (its[-1][0] - its[0][0]).total_seconds() / (its[-1][1] - its[0][1])
    done = next((t for t, msg in stamps if msg.startswith("training done")), None)
    complete = next((t for t, msg in stamps if msg.startswith("run complete")), None)
    if stamps:
        out["logged_s"] = ((complete or stamps[-1][0]) - stamps[0][0]).total_seconds()
    if done and complete:
        out["eval_s"] = (complete - done).total_seconds()
    if final:
        summary = json.loads((run / "summary.json").read_text())
        out["iterations"] = int(summary["iterations"])
        out["train_s"] = float(read_times(run / "summary.json")["train_time_s"])
        out["s_per_iter"] = out["train_s"] / out["iterations"]
        out["test_cases"] = len({c["id"] for c in summary["cases"]})
    return out


def partial_curve(reference: Path, variant: Path) -> dict[str, Any]:
    """Loss curves of two runs, one or both unfinished, compared over the iterations both logged."""
    folders = [p if (p / "curve.csv").is_file() else p.parent / f".{p.name}.tmp" for p in (reference, variant)]
    if not all((p / "curve.csv").is_file() for p in folders):
        return {}
    ref, var = (loss_curve(p) for p in folders)
    common = sorted(set(ref) & set(var))
    if not common:
        return {}
    rel = [abs(var[i] - ref[i]) / abs(ref[i]) for i in common]
    tail = common[len(common) - max(len(common) // 10, 1):]
    return {"logged_iterations": len(common), "curve_max_rel_diff": max(rel),
            "curve_median_rel_diff": sorted(rel)[len(rel) // 2],
            "last_tenth_mean_loss_ref": sum(ref[i] for i in tail) / len(tail),
            "last_tenth_mean_loss_var": sum(var[i] for i in tail) / len(tail), "passes": None}


def run_estimate(run: dict[str, Any], wall_s: float | None, setting: str) -> dict[str, Any] | None:
    """Seconds of one run of ``setting`` with the paper's protocol, from a (shorter) run: start-up and
    evaluation as measured (evaluation scaled to the protocol's test cases), training scaled to its iterations."""
    s_iter = run.get("s_per_iter") or run.get("s_per_iter_log")
    if s_iter is None or wall_s is None or "logged_s" not in run:
        return None
    protocol = PROTOCOL[setting]
    eval_s = run.get("eval_s", 0.0) * protocol["test_cases"] / max(run.get("test_cases") or 1, 1)
    startup_s = max(wall_s - run["logged_s"], 0.0) if run["complete"] else None
    train_s = s_iter * protocol["iterations"]
    return {"s_per_iter": s_iter, "startup_s": startup_s, "train_s": train_s, "eval_s": eval_s,
            "run_s": (startup_s or 0.0) + train_s + eval_s}


# ---------------------------------------------------------------- the check


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = args.device
        self.plan = make_plan(args.tiny, args.table2_iters)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="rmseg-gpu-check-"))
        self.start = time.perf_counter()
        self.deadline = self.start + args.budget
        self.python = sys.executable
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.result: dict[str, Any] = {"device": self.device, "tiny": args.tiny, "budget_s": args.budget, "steps": {},
                                       "variants": {}, "tables": {}, "packing": {}, "curves": {}}
        self.reports: dict[str, Any] = {}
        self.logs: list[str] = []
        self.data_root: Path | None = None

    # ------------------------------------------------------------ bookkeeping

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def step(self, name: str, fn) -> None:
        """Run step ``fn(deadline)`` in its time box, unless less than its minimum is left; record the outcome."""
        cap, minimum = self.plan.steps[name]
        left = self.left()
        if left < minimum:
            self.result["steps"][name] = {"status": "skipped", "why": f"{left:.0f} s of the budget left, "
                                                                    f"{minimum:.0f} s needed"}
            self.write()
            return
        start = time.perf_counter()
        try:
            status = fn(start + min(cap, left)) or "done"
        except Exception as exc:  # noqa: BLE001 - one broken step must not cost the others their figures
            status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self.result["steps"][name] = {"status": status, "wall_s": round(time.perf_counter() - start, 1),
                                      "time_box_s": round(min(cap, left), 1)}
        print(f"[gpu_check] {name}: {status} ({time.perf_counter() - start:.1f} s)", flush=True)
        self.write()

    def log_procs(self, step: str, procs: list[Proc], lines: int = 60) -> None:
        for p in procs:
            text = p.log.read_text(errors="replace").splitlines() if p.log.is_file() else []
            self.logs.append(f"## {step}: {p.name}\n\n`{' '.join(p.cmd[1:])}`: exit {p.rc}"
                             f"{' (time box reached)' if p.timed_out else ''}, {p.wall_s or 0:.1f} s\n\n```\n"
                             + "\n".join(text[-lines:]) + "\n```\n")

    def status_of(self, procs: list[Proc]) -> str:
        if any(p.timed_out for p in procs):
            return "time box reached"
        if any(p.rc is None for p in procs):
            return "cut: no time left to start every process"
        return "done" if all(p.rc == 0 for p in procs) else f"failed (exit {[p.rc for p in procs]})"

    # ------------------------------------------------------------ steps

    def setup(self, deadline: float) -> str:
        import torch

        info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                                "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                                "cpu_count": os.cpu_count()}
        for name in ("monai", "hydra", "omegaconf", "nibabel", "edt", "numpy"):
            try:
                module = __import__(name)
                info[name] = f"{getattr(module, '__version__', '?')} ({Path(module.__file__).parent.parent})"
            except ImportError as exc:
                info[name] = f"missing ({exc})"
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device; use --device cpu --tiny "
                                 "for a dry run")
            props = torch.cuda.get_device_properties(0)
            info |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count, "cudnn": torch.backends.cudnn.version()}
        if shutil.which("nvidia-smi"):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                                  "temperature.gpu,power.draw", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        self.result["machine"] = info
        print(f"[gpu_check] device: {info.get('gpu', 'cpu')}; torch {info['torch']}, CUDA {info['cuda']}", flush=True)
        if self.args.tiny:
            return "done (tiny: synthetic data)"
        data = Path(self.args.data) if self.args.data else None
        if data is None:
            from benchmarks.gpu.bundle import unpack

            data = unpack(Path(self.args.bundle), self.work / "data")
        missing = [d for d in DATA.values() if not (data / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"no {', '.join(missing)} under {data}: build the bundle with `make gpu-bundle` "
                                    "and carry it, or pass --data /path/holding/drishti-gs1-and-la2018")
        self.data_root = data
        return "done"

    def tests(self, deadline: float) -> str:
        """The CUDA tests, verbose: each test's outcome is counted as it is printed, so a cut run still counts."""
        proc = Proc("pytest", [self.python, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rsfE", *TESTS],
                    self.work / "tests.log", self.env)
        run_all([proc], deadline, False)
        self.log_procs("tests", [proc], lines=200)
        text = proc.log.read_text(errors="replace")
        outcomes = dict(re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M))
        counts = {k.lower(): list(outcomes.values()).count(k) for k in sorted(set(outcomes.values()))}
        self.result["tests"] = {
            "counts": counts,
            "failed": [t for t, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")],
            "skipped": sorted(set(re.findall(r"^SKIPPED \[\d+\] (.*)$", text, re.M))),
        }
        if proc.rc == 1 and not proc.timed_out:
            return f"failed: {len(self.result['tests']['failed'])} test(s) failed"
        return self.status_of([proc])

    def benchmarks(self, deadline: float) -> str:
        """The benchmark scripts of the plan; ``time_to_table`` last, from the training and inference reports."""
        out = self.work / "bench"

        def proc(name: str) -> Proc:
            return Proc(name, [self.python, "-m", f"benchmarks.{name}", "--device", self.device, "--out-dir", str(out),
                               *self.plan.benchmarks[name]], self.work / f"{name}.log", self.env,
                        self.plan.caps.get(name, float("inf")))

        procs = run_all([proc(n) for n in self.plan.benchmarks if n != "time_to_table"], deadline, self.plan.parallel)
        if all((out / f"{n}.json").is_file() for n in ("training", "inference")):
            procs += run_all([proc("time_to_table")], deadline, False)
        self.log_procs("benchmarks", procs)
        for p in procs:
            if p.rc == 0 and (out / f"{p.name}.json").is_file():
                self.reports[p.name] = {"json": json.loads((out / f"{p.name}.json").read_text()),
                                        "md": (out / f"{p.name}.md").read_text()}
        self.choose_variants()
        return "; ".join(f"{p.name}: {self.status_of([p])}" for p in procs)

    def choose_variants(self) -> None:
        """Per setting, the fastest variant other than fp32 whose short loss curve matched fp32's."""
        report = self.reports.get("training", {}).get("json", {})
        for setting in report.get("settings", []):
            rows = [r for r in setting["variants"] if r["variant"] != "fp32" and r["curve_matches"]]
            if rows:
                best = min(rows, key=lambda r: r["median_s"])
                self.result["variants"][setting["setting"]] = {
                    "variant": best["variant"], "speedup_vs_fp32": best["speedup_vs_fp32"],
                    "why": "fastest variant whose short loss curve matched fp32 (training benchmark)"}

    def variant(self, setting: str) -> str:
        chosen = self.result["variants"].get(setting)
        if chosen is None:
            self.result["variants"][setting] = chosen = {
                "variant": DEFAULT_VARIANT, "why": "training benchmark gave no matching variant: the default"}
        return chosen["variant"]

    def train_cmd(self, setting: str, variant: str, runs: Path, seed: int = 0, iterations: int | None = None) -> list[str]:
        overrides = [f"experiment={SETTINGS[setting]}", f"seed={seed}", f"paths.runs_dir={runs}",
                     f"paths.data_dir={self.work / 'prepared'}", f"trainer.device={self.device}",
                     "trainer.progress_bar=false", "trainer.tensorboard=false", *self.plan.table_overrides[setting]]
        if self.data_root is not None:
            overrides.append(f"data.root={self.data_root / DATA[setting]}")
        iterations = iterations or self.plan.iterations[setting]
        if iterations is not None:
            overrides.append(f"trainer.max_iters={iterations}")
        overrides += [f"trainer.{switch}=true" for switch in VARIANTS[variant]]
        return [self.python, "-m", "rmseg.cli.train", *overrides]

    def table_runs(self, step: str, deadline: float, variants: tuple[str, ...]) -> str:
        """Per table one run of each of ``variants`` (``"chosen"``: the variant chosen for it), one after another."""
        procs = []
        for variant in variants:
            for setting in SETTINGS:
                v = self.variant(setting) if variant == "chosen" else variant
                procs.append(Proc(f"{setting} {v}", self.train_cmd(setting, v, self.run_root(setting, v)),
                                  self.work / f"{setting}_{v}.log", self.env, self.plan.caps.get(setting, float("inf"))))
        run_all(procs, deadline, self.plan.parallel)
        self.log_procs(step, procs)
        for proc in procs:
            setting, variant = proc.name.split()
            table = self.result["tables"].setdefault(setting, {
                "experiment": SETTINGS[setting], "variant": self.variant(setting), "runs": {},
                "iterations": self.plan.iterations[setting] or PROTOCOL[setting]["iterations"]})
            table["runs"][variant] = {**parse_run(self.run_root(setting, variant) / SETTINGS[setting] / "seed0"),
                                      **proc.record()}
        return self.status_of(procs)

    def run_root(self, setting: str, variant: str) -> Path:
        return self.work / "runs" / setting / variant

    def tables(self, deadline: float) -> str:
        """Per table, a run with the variant chosen from the training benchmark (Table 1: the paper's protocol);
        side by side (tiny), the fp32 runs of ``curves`` too."""
        return self.table_runs("tables", deadline, ("chosen", "fp32") if self.plan.parallel else ("chosen",))

    def curves(self, deadline: float) -> str:
        """Per table, the same run in fp32, and the two compared as ``benchmarks/curve_check.py`` compares them
        (over the iterations both logged where either run was cut)."""
        done = all("fp32" in t["runs"] for t in self.result["tables"].values()) and self.result["tables"]
        status = "done (fp32 runs made by the tables step)" if done else self.table_runs("curves", deadline, ("fp32",))
        for setting, table in self.result["tables"].items():
            variant = table["variant"]
            ref, var = (self.run_root(setting, v) / SETTINGS[setting] / "seed0" for v in ("fp32", variant))
            complete = all(table["runs"].get(v, {}).get("complete") for v in ("fp32", variant))
            self.result["curves"][setting] = {"variant": variant,
                                              **(compare_runs(ref, var) if complete else partial_curve(ref, var))}
        return status

    def packing(self, deadline: float) -> str:
        """Per entry of the plan, runs of a table side by side (separate processes, seeds 0, 1, ...) against the
        same runs one at a time, predicted from the tables step's run alone of that variant: its time outside
        training as measured, plus its seconds per iteration times these iterations."""
        statuses = []
        for setting, count, iterations in self.plan.packing:
            if statuses and self.left() < self.plan.steps["packing"][1] / 2:
                statuses.append(f"{setting}: skipped (budget)")
                continue
            variant = self.variant(setting)
            alone = self.result["tables"].get(setting, {}).get("runs", {}).get(variant, {})
            if not alone.get("complete"):
                statuses.append(f"{setting}: skipped (no complete {variant} run alone in the tables step)")
                continue
            root = self.work / "packing" / setting
            packed = [Proc(f"{setting} packed {i}", self.train_cmd(setting, variant, root, i, iterations),
                           self.work / f"pack_{setting}_{i}.log", self.env) for i in range(count)]
            start = time.perf_counter()
            run_all(packed, deadline, True)
            packed_wall = time.perf_counter() - start
            self.log_procs("packing", packed, lines=20)
            record: dict[str, Any] = {"variant": variant, "runs": count, "iterations": iterations,
                                      "alone_s_per_iter": alone["s_per_iter"]}
            if all(p.rc == 0 for p in packed):
                runs = [parse_run(root / SETTINGS[setting] / f"seed{i}") for i in range(count)]
                alone_s = max(alone["wall_s"] - alone["train_s"], 0.0) + alone["s_per_iter"] * iterations
                record |= {"packed_wall_s": packed_wall, "alone_predicted_wall_s": alone_s,
                           "packed_s_per_iter": [r["s_per_iter"] for r in runs],
                           "gain": count * alone_s / packed_wall,
                           "train_gain": count * alone["s_per_iter"] / max(r["s_per_iter"] for r in runs)}
            self.result["packing"][setting] = record
            statuses.append(f"{setting}: {self.status_of(packed)}")
        return "; ".join(statuses)

    # ------------------------------------------------------------ estimates and reports

    def estimates(self) -> list[dict[str, Any]]:
        """Each table's wall time on this device: rows x seeds runs, one at a time and packed."""
        from rmseg.config.compose import experiment_names

        rows = []
        for setting, table in self.result["tables"].items():
            for variant, run in table["runs"].items():
                est = run_estimate(run, run.get("wall_s"), setting)
                if est is None:
                    continue
                n = len(experiment_names(setting)) * SEEDS
                pack = self.result["packing"].get(setting, {})
                gain = pack.get("gain") if pack.get("variant") == variant else None
                rows.append({"table": setting, "variant": variant, "runs": n, **est,
                             "sequential_min": n * est["run_s"] / 60, "packing_gain": gain,
                             "packed_min": n * est["run_s"] / 60 / gain if gain else None,
                             "target_min": PROTOCOL[setting]["target_min"]})
        return rows

    def write(self) -> None:
        """gpu_check.{md,json}, benchmarks.json and logs.md into --out (each written whole, then renamed)."""
        self.result["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.result["estimates"] = self.estimates()
        files = {"gpu_check.json": json.dumps(self.result, indent=1, default=str) + "\n",
                 "benchmarks.json": json.dumps(self.reports, indent=1, default=str) + "\n",
                 "logs.md": "# GPU check: step logs\n\n" + "\n".join(self.logs),
                 "gpu_check.md": self.markdown()}
        for name, text in files.items():
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def markdown(self) -> str:
        r = self.result
        machine = r.get("machine", {})
        lines = ["# GPU check", "",
                 f"Device `{r['device']}`{' (tiny dry run)' if r['tiny'] else ''}: {machine.get('gpu', 'CPU')}, torch "
                 f"{machine.get('torch')}, CUDA {machine.get('cuda')}, cuDNN {machine.get('cudnn')}; "
                 f"{r['elapsed_s']} s of a {r['budget_s']} s budget.", "", "## Steps", "",
                 markdown_table([{"step": k, **v} for k, v in r["steps"].items()],
                                ["step", "status", "wall_s", "time_box_s", "why"])]
        tests = r.get("tests")
        if tests:
            lines += ["", "## CUDA tests", "", f"Counts: {tests['counts']}."]
            lines += [f"- failed: `{t}`" for t in tests["failed"]] + [f"- skipped: {t}" for t in tests["skipped"][:20]]
        if r["variants"]:
            lines += ["", "## Variant per table (trainer switches)", "",
                      markdown_table([{"table": k, **v} for k, v in r["variants"].items()],
                                     ["table", "variant", "speedup_vs_fp32", "why"])]
        if r["curves"]:
            lines += ["", "## Whole runs against fp32 (curve check)", "",
                      markdown_table([{"table": k, **v} for k, v in r["curves"].items()],
                                     ["table", "variant", "logged_iterations", "curve_median_rel_diff",
                                      "curve_max_rel_diff", "dice_ref", "dice_var", "dice_wilcoxon_p", "speedup",
                                      "passes"])]
        if r["tables"]:
            runs = [{"table": k, "variant": v, **run} for k, t in r["tables"].items() for v, run in t["runs"].items()]
            lines += ["", "## Table runs", "",
                      markdown_table(runs, ["table", "variant", "rc", "timed_out", "complete", "last_logged_iteration",
                                            "s_per_iter", "s_per_iter_log", "train_s", "eval_s", "test_cases", "wall_s"])]
        if r["packing"]:
            lines += ["", "## Packing (runs side by side on one device)", "",
                      "`runs` runs of `iterations` iterations side by side (separate processes); `gain` = `runs` x "
                      "the predicted wall time of one such run alone / the wall time side by side (whole processes: "
                      "start-up, training, evaluation); `train_gain` the same for training iterations per second.",
                      "",
                      markdown_table([{"table": k, **v} for k, v in r["packing"].items()],
                                     ["table", "variant", "runs", "iterations", "alone_predicted_wall_s",
                                      "packed_wall_s", "gain", "train_gain"])]
        if r["estimates"]:
            lines += ["", "## Time to the tables on this device (estimate)", "",
                      "rows x 3 seeds runs of the paper's protocol: start-up and evaluation as measured (evaluation "
                      "scaled to the protocol's test cases), training = seconds per iteration x the protocol's "
                      "iterations; packed = one at a time / packing gain.", "",
                      markdown_table(r["estimates"], ["table", "variant", "runs", "s_per_iter", "startup_s", "train_s",
                                                      "eval_s", "run_s", "sequential_min", "packing_gain",
                                                      "packed_min", "target_min"])]
        lines += ["", f"Benchmark reports: `benchmarks.json` ({', '.join(self.reports) or 'none'}); "
                  "`python -m benchmarks.gpu.check --restore <this folder>` writes them into results/benchmarks/. "
                  "Step logs: `logs.md`. docs/gpu.md says what each figure means."]
        return "\n".join(lines) + "\n"

    def run(self) -> int:
        self.step("setup", self.setup)
        if "error" in self.result["steps"]["setup"]["status"]:
            return 2
        for name in STEPS:
            if name in self.args.steps:
                self.step(name, getattr(self, name))
        shutil.rmtree(self.work, ignore_errors=True)
        print((self.out / "gpu_check.md").read_text())
        return 0 if all(re.fullmatch(r"done.*|(\w+: done(; )?)+", s["status"]) for s in self.result["steps"].values()) else 1


def restore(folder: Path, results: Path = RESULTS_DIR) -> list[Path]:
    """Write the benchmark reports of a check's ``benchmarks.json`` into ``results`` as ``<name>.{md,json}``
    (an existing report is first moved to ``results/archive/``, as ``benchmarks.common.write_report`` does)."""
    reports = json.loads((Path(folder) / "benchmarks.json").read_text())
    written = []
    for name, report in reports.items():
        targets = [results / f"{name}.md", results / f"{name}.json"]
        old = [p for p in targets if p.exists()]
        if old:
            stamp = dt.datetime.fromtimestamp(old[0].stat().st_mtime, dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            (results / "archive").mkdir(parents=True, exist_ok=True)
            for p in old:
                shutil.move(p, results / "archive" / f"{name}.{stamp}{p.suffix}")
        targets[0].write_text(report["md"])
        targets[1].write_text(json.dumps(report["json"], indent=2, default=str) + "\n")
        written += targets
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="report folder (default $OUT)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="dry run: every step on tiny sizes and synthetic data")
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "build" / "gpu", help="the bundle (make gpu-bundle)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder holding drishti-gs1/ and la2018/ instead of the bundle's data")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all steps (default 460; with --tiny 1800)")
    parser.add_argument("--table2-iters", type=int, default=200, help="iterations of the Table 2 runs")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="steps to run (default all; setup always runs)")
    parser.add_argument("--restore", type=Path, default=None, metavar="FOLDER",
                        help="write the benchmark reports of a check's FOLDER into results/benchmarks/ and stop")
    args = parser.parse_args(argv)
    if args.restore is not None:
        for path in restore(args.restore):
            print(path)
        return 0
    if args.out is None:
        parser.error("no report folder: set OUT or pass --out")
    if args.device == "cpu" and not args.tiny:
        parser.error("--device cpu runs only as the dry run: add --tiny (CPU figures come from `make bench`)")
    if args.budget is None:
        args.budget = 1800.0 if args.tiny else 460.0
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
