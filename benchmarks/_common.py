"""Shared by the benchmarks (not a benchmark itself): the machine's description, training runs timed through the
CLI, and the Markdown tables every benchmark prints and, with ``--record``, adds to its results file.

Every table a benchmark prints starts with the same four columns: the date, the machine (CPU model, vector
width, usable CPUs, torch version), the load (the 1-minute load average when the benchmark started, against the
usable CPUs) and the commit. ``--record`` appends the rows to the table of the same heading in
``benchmarks/results/<name>.md``, so that file keeps one table per measurement with every machine's rows in it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
COMMON_COLUMNS = ("date", "machine", "load", "commit")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_flags() -> set[str]:
    try:
        return set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def fp32_lanes() -> tuple[int, str]:
    """fp32 lanes of one FMA instruction: 16 with AVX-512, 8 with AVX2/FMA (read from /proc/cpuinfo), else 4."""
    flags = _cpu_flags()
    if "avx512f" in flags:
        return 16, "AVX-512"
    if "avx2" in flags and "fma" in flags:
        return 8, "AVX2"
    return 4, "SSE"


def peak_gflops(cores: int) -> tuple[float, str]:
    """The nominal fp32 peak: cores x 2 FMA units x fp32 lanes x 2 x the clock /proc/cpuinfo lists (an upper bound
    at that clock; a CPU that splits 512-bit FMAs has half of it, turbo clocks can exceed it)."""
    mhz = []
    try:
        mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    except OSError:
        pass
    if not mhz:
        return float("nan"), "clock unknown"
    ghz = max(mhz) / 1000
    lanes, isa = fp32_lanes()
    return cores * 2 * lanes * 2 * ghz, f"{cores} cores x 2 FMA x {lanes} fp32 lanes ({isa}) x 2 x {ghz:.2f} GHz"


def machine() -> str:
    import torch

    flags = _cpu_flags()
    bf16 = ", native bf16" if {"avx512_bf16", "amx_bf16"} & flags else ""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu_model()} ({fp32_lanes()[1]}{bf16}), {usable_cpus()} CPUs{gpu}, torch {torch.__version__}"


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f} / {usable_cpus()} CPUs" if hasattr(os, "getloadavg") else "load unknown"


def commit() -> str:
    """The checked-out commit, with "+changes" when files other than the results differ from it (rows an earlier
    ``--record`` appended to benchmarks/results/ do not change the code that measured them)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("describe", "--always")
    if not head:
        return "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{RESULTS.relative_to(ROOT)}")
    return head + ("+changes" if changed else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest sizes: checks that the benchmark runs (seconds); its numbers mean nothing",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="append the rows to the results file's tables (benchmarks/results/NAME.md)",
    )


@attrs.define
class Table:
    """One table of a benchmark: a heading, its own columns (after the common four) and rows of cells."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]] = attrs.Factory(list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def header(self) -> list[str]:
        columns = [*COMMON_COLUMNS, *self.columns]
        return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def emit(
    name: str, protocol: str, tables: Sequence[Table], *, record: bool, smoke: bool, results: Path = RESULTS
) -> None:
    """Print the tables (Markdown) and, with ``record``, append their rows to ``results/<name>.md``."""
    common = [datetime.date.today().isoformat(), machine(), load() + (", smoke" if smoke else ""), commit()]
    lines = {t.title: ["| " + " | ".join([*common, *row]) + " |" for row in t.rows] for t in tables}
    print(f"\n{name}: {protocol}")
    for t in tables:
        print("\n".join(["", f"## {t.title}", "", *t.header(), *lines[t.title]]))
    sys.stdout.flush()
    if not record:
        return
    if smoke:
        raise SystemExit("--smoke numbers mean nothing: they are never recorded")
    path = results / f"{name}.md"
    text = path.read_text().splitlines() if path.exists() else [f"# {name}", ""]
    for t in tables:
        text = _insert(text, t, lines[t.title], path)
    path.write_text("\n".join(text) + "\n")
    print(f"\nrecorded in {path}")


def _insert(text: list[str], table: Table, rows: list[str], path: Path) -> list[str]:
    heading = f"## {table.title}"
    if heading not in text:
        return [*text, "", heading, "", *table.header(), *rows]
    i = text.index(heading) + 1
    while i < len(text) and not text[i].startswith("|"):
        i += 1
    if i == len(text) or text[i] != table.header()[0]:
        raise SystemExit(
            f"{path}: the table under '{heading}' has other columns than {table.header()[0]}; "
            "move it aside (rename its heading) and record again"
        )
    while i < len(text) and text[i].startswith("|"):
        i += 1
    return [*text[:i], *rows, *text[i:]]


# ---------------------------------------------------------------- processes
def _die_with_parent() -> None:
    """In a child, before it runs: a SIGTERM when the benchmark dies (Linux), so that no run it started outlives it
    (a run stops cleanly on SIGTERM; torchrun passes it on to its workers)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: Keyword arguments for every subprocess a benchmark starts.
CHILD = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}


# ---------------------------------------------------------------- training runs timed through the CLI


def command(
    recipe: str, runs: Path, steps: int, overrides: Sequence[str] = (), nproc: int = 1, log_every: int = 25
) -> list[str]:
    """`dalle-kit run` of ``recipe`` for ``steps`` steps: no sample grids, no evaluation, one checkpoint at the end."""
    args = [
        sys.executable,
        "-m",
        "dalle_kit",
        "run",
        recipe,
        "--runs-dir",
        str(runs),
        "-q",
        "--set",
        f"train.steps={steps}",
        "--set",
        f"train.log_every={log_every}",
        "--set",
        f"train.checkpoint_every={steps}",
        "--set",
        "sample.every=0",
        "--set",
        "eval.metrics=[]",
    ]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return args + [a for o in overrides for a in ("--set", o)]


def timed_run(
    recipe: str,
    runs: Path,
    steps: int,
    overrides: Sequence[str] = (),
    *,
    nproc: int = 1,
    threads: int | None = None,
    log_every: int = 25,
) -> dict:
    """Train in a fresh process (``threads``: its OMP_NUM_THREADS, None: unset) and read its speed off the training
    log's own clock, from the second logged step (the first steps warm up allocators and caches) to the last, so
    that start-up, data loading and the final checkpoint stay outside."""
    from dalle_kit.checkpoint import list_checkpoints, load_state

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    args = command(recipe, runs, steps, overrides, nproc, log_every)
    done = subprocess.run(args, env=env, capture_output=True, text=True, **CHILD)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    (run_dir,) = runs.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    first, last = train[1], train[-1]
    batch = tomllib.loads((run_dir / "recipe.toml").read_text())["train"]["batch_size"]
    seconds, steps_timed = last["time"] - first["time"], last["step"] - first["step"]
    ((_, checkpoint),) = list_checkpoints(run_dir / "checkpoints")[-1:]
    return {
        "processes": nproc,
        "batch_per_process": batch,
        "steps_timed": steps_timed,
        "seconds": round(seconds, 2),
        "ms_per_step": round(1000 * seconds / steps_timed, 1),
        "images_per_s": round(steps_timed * batch * nproc / seconds, 1),
        "threads_used": load_state(checkpoint, ("trainer",)).get("trainer", {}).get("threads"),
        "last_losses": {k: v for k, v in last.items() if k.startswith("loss")},
    }
