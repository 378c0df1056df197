"""Step time of a training run alone and beside a busy process: a fixed thread count (torch's default, one per usable
CPU) against the thread settings that look at the load, side by side in one run.

    .venv/bin/python benchmarks/threads_contention.py [--recipe shapes] [--steps 150] [--smoke] [--record]

First table, the measured run arriving second: each measurement trains the recipe for ``--steps`` steps in a fresh
process and takes the mean step time from the training log's clock between the second logged step and the last
(start-up excluded). Two competitors, each started `HEAD_START` seconds earlier so that it is busy when the measured
run looks at the load: a second training run of the same recipe with one thread per usable CPU ('run'), and one
process spinning on one core ('spinner'). Ratios are against the quiet run with torch's default threads; the fair
share beside one equal competitor is 2x.

Second table, the measured run there first: it trains on an idle machine, and at its step `ARRIVAL` the competitor
(a run with one thread per usable CPU, 'run', or a run with the recipe's default thread setting, 'default-run')
starts beside it. Its step time is read off its log from `SETTLE` seconds after the competitor started (time for
``adaptive`` to look again) over `WINDOW` seconds. ``once`` chooses at the start only, so it cannot make room for a
newcomer; ``adaptive`` looks again at the interval `dalle_kit_plugins.common.cpuload` sets.

Run it on an otherwise idle machine. Results: benchmarks/results/threads-contention.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CHILD, Table, add_arguments, command, emit, timed_run, usable_cpus
from dalle_kit.rundir import read_jsonl

SPINNER = "while True: pass"
ADAPTING = "adaptive"  # the setting that follows the load during the run
HEAD_START = 8.0  # seconds a competitor runs before the measured run starts
ARRIVAL = 50  # the measured run's step at which the newcomer starts (second table)
# seconds after the newcomer starts: the adapting setting looks at the load at an interval over the last interval,
# so it may need two looks to see the newcomer; then measure
SETTLE, WINDOW = 35.0, 40.0
SLACK = 3.0  # seconds more, so that the window's last rows are in the log
DEADLINE = 600.0  # seconds the measured run may take to reach its step ARRIVAL
CPUS = usable_cpus()  # torch's default thread count, and the rival runs' explicit one


def measure(
    recipe: str, steps: int, threads: str, competitor: str, tmp: Path, overrides: list[str], log_every: int
) -> dict:
    """``competitor``: "none", "run" (a training run with all usable CPUs as threads) or "spinner" (one process
    keeping one core busy)."""
    rival = None
    if competitor != "none":
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        args = (
            command(recipe, tmp / f"rival-{threads}", 100000, [*overrides, f"train.threads={CPUS}"])
            if competitor == "run"
            else [sys.executable, "-c", SPINNER]
        )
        rival = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **CHILD)
        time.sleep(HEAD_START)
    try:
        result = timed_run(
            recipe,
            tmp / f"run-{threads}-{competitor}",
            steps,
            [*overrides, f"train.threads={threads}"],
            log_every=log_every,
        )
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return {"threads_setting": threads, "competitor": competitor, **result}


def log_rows(runs: Path) -> list[dict]:
    """The rows of the one run under `runs` so far (none before its metrics.jsonl exists; a half-written line
    skipped)."""
    files = list(runs.glob("*/metrics.jsonl"))
    return read_jsonl(files[0]) if files else []


def measure_incumbent(recipe: str, threads: str, newcomer: str, tmp: Path, overrides: list[str]) -> dict:
    """The measured run trains alone first; at its step `ARRIVAL` ``newcomer`` ("run": one thread per usable CPU,
    "default-run": a run with the default thread setting) starts beside it. Mean step time over `WINDOW` s from
    `SETTLE` s after that."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    runs = tmp / f"incumbent-{threads}-{newcomer}"
    log_every = max(1, ARRIVAL // 10)
    args = command(recipe, runs, 100000, [*overrides, f"train.threads={threads}"], log_every=log_every)
    measured = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **CHILD)
    rival = None
    try:
        deadline = time.monotonic() + DEADLINE
        while not any(r.get("kind") == "train" and r["step"] >= ARRIVAL for r in log_rows(runs)):
            if measured.poll() is not None:
                raise SystemExit(
                    f"the measured run exited ({measured.returncode}) before its step {ARRIVAL}: "
                    f"run `{' '.join(args)}` to see why"
                )
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the measured run did not reach its step {ARRIVAL} in {DEADLINE:g} s: the machine "
                    "is too busy for this benchmark"
                )
            time.sleep(0.2)
        quiet_rows = [r for r in log_rows(runs) if r.get("kind") == "train"]
        start = quiet_rows[-1]["time"]  # the log's clock when the newcomer starts (within one log interval)
        rival_threads = [f"train.threads={CPUS}"] if newcomer == "run" else []
        rival = subprocess.Popen(
            command(recipe, tmp / f"newcomer-{threads}-{newcomer}", 100000, [*overrides, *rival_threads]),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **CHILD,
        )
        time.sleep(SETTLE + WINDOW + SLACK)
        rows = log_rows(runs)
    finally:
        for process in (rival, measured):
            if process is not None:
                process.kill()
                process.wait()
    train = [r for r in rows if r.get("kind") == "train" and start + SETTLE <= r["time"] <= start + SETTLE + WINDOW]
    quiet = [r for r in quiet_rows if r["step"] >= ARRIVAL // 2]
    counts = [r["threads"] for r in rows if r.get("kind") == "threads"]

    def ms(rs: list[dict]) -> float:
        return round(1000 * (rs[-1]["time"] - rs[0]["time"]) / (rs[-1]["step"] - rs[0]["step"]), 1)

    return {
        "threads_setting": threads,
        "newcomer": newcomer,
        "ms_per_step_alone": ms(quiet),
        "ms_per_step": ms(train),
        "steps_timed": train[-1]["step"] - train[0]["step"],
        "thread_changes": counts,
    }


def main() -> None:
    global HEAD_START, ARRIVAL, SETTLE, WINDOW, SLACK, CPUS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=150)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:  # on a busy machine: one thread a run, none spinning against the others
        CPUS = 1
    cpus = CPUS
    overrides, log_every = [], 25
    newcomer_cases = [(s, c) for c in ("none", "run", "spinner") for s in (str(cpus), ADAPTING)]
    incumbent_cases = [(s, c) for c in ("run", "default-run") for s in (str(cpus), "once", ADAPTING)]
    if args.smoke:  # a small train split and batch, short waits, one case of each table
        overrides, log_every, args.steps = ["data.train_size=256", "train.batch_size=8"], 1, 4
        HEAD_START, ARRIVAL, SETTLE, WINDOW, SLACK = 1.0, 4, 1.0, 2.0, 0.5
        newcomer_cases, incumbent_cases = [(str(cpus), "none"), (ADAPTING, "spinner")], [(ADAPTING, "run")]
    with tempfile.TemporaryDirectory(prefix="threads-contention-") as tmp:
        results = [measure(args.recipe, args.steps, s, c, Path(tmp), overrides, log_every) for s, c in newcomer_cases]
        incumbents = [measure_incumbent(args.recipe, s, c, Path(tmp), overrides) for s, c in incumbent_cases]
    quiet = results[0]["ms_per_step"]

    def label(setting: str) -> str:
        return f"{setting} (torch's default)" if setting.isdigit() else setting

    second = Table(
        "The measured run arriving second",
        ["recipe", "steps", "threads setting", "threads used", "beside", "ms/step", "vs quiet default"],
    )
    for r in results:
        second.add(
            args.recipe,
            args.steps,
            label(r["threads_setting"]),
            r["threads_used"],
            r["competitor"],
            r["ms_per_step"],
            f"{r['ms_per_step'] / quiet:.2f}x",
        )
    first = Table(
        "The measured run there first, the competitor arriving while it trains",
        [
            "recipe",
            "threads setting",
            "thread changes",
            "newcomer",
            "arriving at step",
            "ms/step alone",
            "ms/step beside",
            "vs quiet default",
        ],
    )
    for r in incumbents:
        changes = " -> ".join(str(c) for c in r["thread_changes"]) or "none"
        first.add(
            args.recipe,
            label(r["threads_setting"]),
            changes,
            r["newcomer"],
            ARRIVAL,
            r["ms_per_step_alone"],
            r["ms_per_step"],
            f"{r['ms_per_step'] / quiet:.2f}x",
        )
    protocol = (
        f"first table: {args.steps} steps a run, mean step time from the second logged step (log every "
        f"{log_every}) by the training log's clock, competitors started {HEAD_START:g} s before; second "
        f"table: step time over {WINDOW:g} s from {SETTLE:g} s after the newcomer started, by the measured "
        f"run's log; 'vs quiet default' against the first row of the first table"
    )
    emit("threads-contention", protocol, [second, first], record=args.record, smoke=args.smoke)


if __name__ == "__main__":
    main()
