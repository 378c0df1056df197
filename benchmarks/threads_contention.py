"""Step time of a training run alone and beside one busy process, with torch's default thread count (before) and
with ``[train] threads = "auto"`` (after), side by side in one run.

    python benchmarks/threads_contention.py [--recipe shapes] [--steps 150] [--out benchmarks/results] [--name NAME]

Each measurement trains the recipe for ``--steps`` steps in a fresh process and takes the mean step time from the
training log's clock between step 50 and the last (start-up excluded). Two competitors, each started 8 s earlier so
that it is busy when the measured run looks at the load: a second training run of the same recipe with torch's default
threads (one per usable CPU), and one process spinning on one core. Ratios are against the quiet run with the default threads; the fair share beside one
equal competitor is 2x, the target at most 2.5x. Run it on an otherwise idle machine.
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

from dalle_kit.threads import usable_cpus
from hand_loop import cpu_model
from timed_runs import command, timed_run, write_results


SPINNER = "while True: pass"


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
    write_results(args.out, args.name, "\n".join(lines) + "\n", results)


if __name__ == "__main__":
    main()
