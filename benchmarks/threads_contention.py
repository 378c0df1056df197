"""Step time of a training run alone and beside one busy process, with torch's default thread count (before) and
with ``[train] threads = "auto"`` (after), side by side in one run.

    python benchmarks/threads_contention.py [--recipe shapes] [--steps 150] [--out benchmarks/results] [--name NAME]

Each measurement trains the recipe for ``--steps`` steps in a fresh process and takes the mean step time from the
training log's clock between step 50 and the last (start-up excluded). Two competitors, each started 8 s earlier so
that it is busy when the measured run looks at the load: a second training run of the same recipe with torch's default
threads (one per usable CPU), and one process spinning on one core. Ratios are against the quiet run with the default threads; the fair share beside one
equal competitor is 2x, the target at most 2.5x. Run it on an otherwise idle machine.

The second table turns the order round: the measured run starts first, on an idle machine, and the competitor (the
same 2-thread run, or a second run with the default ``auto``) arrives while it trains. Its step time is read off its
log from `SETTLE` seconds after the competitor started (time for ``auto`` to look again) over `WINDOW` seconds.
``once`` (the default before 2026-12-04) chooses at the start only, so it cannot make room for a newcomer; ``auto``
looks again every 15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dalle_kit.plots import read_jsonl
from dalle_kit.threads import usable_cpus
from hand_loop import cpu_model
from timed_runs import command, timed_run, write_results


SPINNER = "while True: pass"
SETTLE, WINDOW = 35.0, 40.0  # seconds after the newcomer starts: "auto" looks every 15 s over the last 15 s, so it
# may need two looks to see the newcomer; then measure


def measure(recipe: str, steps: int, threads: str, competitor: str, tmp: Path) -> dict:
    """``competitor``: "none", "run" (a training run with all usable CPUs as threads) or "spinner" (one process
    keeping one core busy)."""
    rival = None
    if competitor != "none":
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        args = (command(recipe, tmp / f"rival-{threads}", 100000, [f"train.threads={usable_cpus()}"]) if competitor == "run"
                else [sys.executable, "-c", SPINNER])
        rival = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)
    try:
        result = timed_run(recipe, tmp / f"run-{threads}-{competitor}", steps, [f"train.threads={threads}"])
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return {"threads_setting": threads, "competitor": competitor, **result}


def log_rows(runs: Path) -> list[dict]:
    """The rows of the one run under `runs` so far (none before its metrics.jsonl exists; a half-written line skipped)."""
    files = list(runs.glob("*/metrics.jsonl"))
    return read_jsonl(files[0]) if files else []


def measure_incumbent(recipe: str, threads: str, newcomer: str, tmp: Path) -> dict:
    """The measured run trains alone first; at its step 50 ``newcomer`` ("run": 2 threads, "auto-run": a run with
    the default thread setting) starts beside it. Mean step time over `WINDOW` s from `SETTLE` s after that."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    runs = tmp / f"incumbent-{threads}-{newcomer}"
    measured = subprocess.Popen(command(recipe, runs, 100000, [f"train.threads={threads}", "train.log_every=5"]),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rival = None
    try:
        while not any(r.get("kind") == "train" and r["step"] >= 50 for r in log_rows(runs)):
            if measured.poll() is not None:
                raise SystemExit(f"the measured run failed:\n{measured.stderr.read()[-2000:]}")
            time.sleep(0.2)
        quiet_rows = [r for r in log_rows(runs) if r.get("kind") == "train"]
        start = quiet_rows[-1]["time"]  # the log's clock when the newcomer starts (within one log interval)
        rival_threads = usable_cpus() if newcomer == "run" else "auto"
        rival = subprocess.Popen(command(recipe, tmp / f"newcomer-{threads}-{newcomer}", 100000,
                                         [f"train.threads={rival_threads}"]),
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(SETTLE + WINDOW + 3)
        rows = log_rows(runs)
    finally:
        for process in (rival, measured):
            if process is not None:
                process.kill()
                process.wait()
    train = [r for r in rows if r.get("kind") == "train" and start + SETTLE <= r["time"] <= start + SETTLE + WINDOW]
    quiet = [r for r in quiet_rows if r["step"] >= 25]
    counts = [r["threads"] for r in rows if r.get("kind") == "threads"]
    ms = lambda rs: round(1000 * (rs[-1]["time"] - rs[0]["time"]) / (rs[-1]["step"] - rs[0]["step"]), 1)
    return {"threads_setting": threads, "newcomer": newcomer, "ms_per_step_alone": ms(quiet),
            "ms_per_step": ms(train), "steps_timed": train[-1]["step"] - train[0]["step"],
            "thread_changes": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="threads-contention", help="results file name (one per machine)")
    args = parser.parse_args()
    cpus = usable_cpus()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting, competitor in [(s, c) for c in ("none", "run", "spinner") for s in (str(cpus), "auto")]:
            results.append(measure(args.recipe, args.steps, setting, competitor, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
        incumbents = []
        for setting, newcomer in [(s, c) for c in ("run", "auto-run") for s in (str(cpus), "once", "auto")]:
            incumbents.append(measure_incumbent(args.recipe, setting, newcomer, Path(tmp)))
            print(json.dumps(incumbents[-1]), flush=True)
    quiet = results[0]["ms_per_step"]
    lines = ["# Training beside a busy process: torch's default threads vs `threads = \"auto\"` "
             "(`benchmarks/threads_contention.py`)", "",
             f"Recipe `{args.recipe}`, {args.steps} steps per run, mean step time from step 50 by the training log's clock. "
             f"Competitors: a second run of the same recipe with {cpus} threads ('run'), or one process spinning on one core "
             f"('spinner'), started 8 s before. Machine: {cpu_model()} ({platform.machine()}), {cpus} usable "
             f"CPUs, torch {torch.__version__}. Fair share beside one equal competitor: 2x; target: at most 2.5x.", "",
             "| threads setting | threads used | beside | ms/step | vs quiet default |", "|---|---|---|---|---|"]
    for r in results:
        label = f"{r['threads_setting']} (torch's default)" if r["threads_setting"] != "auto" else "auto"
        lines.append(f"| {label} | {r['threads_used']} | {r['competitor']} | {r['ms_per_step']} | "
                     f"{r['ms_per_step'] / quiet:.2f}x |")
    lines += ["", f"## The measured run first, the competitor arriving at its step 50", "",
              f"Newcomer: the same recipe with {cpus} threads ('run') or with the default `threads = \"auto\"` "
              f"('auto-run'). Step time over {WINDOW:.0f} s from {SETTLE:.0f} s after the newcomer started, by the "
              "measured run's log (every 5 steps); 'alone' is its own steps 25-50 before that.", "",
              "| threads setting | thread changes | newcomer | ms/step alone | ms/step beside | vs quiet default |",
              "|---|---|---|---|---|---|"]
    for r in incumbents:
        label = {"auto": "auto", "once": "once (the default until 2026-12-04)"}.get(
            r["threads_setting"], f"{r['threads_setting']} (torch's default)")
        changes = " -> ".join(str(c) for c in r["thread_changes"]) or "none"
        lines.append(f"| {label} | {changes} | {r['newcomer']} | {r['ms_per_step_alone']} | {r['ms_per_step']} | "
                     f"{r['ms_per_step'] / quiet:.2f}x |")
    write_results(args.out, args.name, "\n".join(lines) + "\n", {"newcomer_measured": results,
                                                                   "incumbent_measured": incumbents})


if __name__ == "__main__":
    main()
