"""Step time of a training run alone and beside one busy process, with torch's default thread count (before) and
with ``[train] threads = "auto"`` (after), side by side in one run.

    python benchmarks/threads_contention.py [--recipe shapes] [--steps 150] [--out benchmarks/results]

Each measurement trains the recipe for ``--steps`` steps in a fresh process and takes the mean step time from the
training log's clock between step 50 and the last (start-up excluded). The competitor is a second training run of
the same recipe with torch's default threads (one per usable CPU), started 8 s earlier so that it is busy when the
measured run looks at the load. Ratios are against the quiet run with the default threads; the fair share beside one
equal competitor is 2x, the target at most 2.5x. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from dalle_kit.threads import usable_cpus
from timed_runs import command, timed_run, write_results


def measure(recipe: str, steps: int, threads: str, competitor: bool, tmp: Path) -> dict:
    rival = None
    if competitor:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        rival = subprocess.Popen(command(recipe, tmp / "rival", 100000, [f"train.threads={usable_cpus()}"]), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    args = parser.parse_args()
    cpus = usable_cpus()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting, competitor in [(str(cpus), False), ("auto", False), (str(cpus), True), ("auto", True)]:
            results.append(measure(args.recipe, args.steps, setting, competitor, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    quiet = results[0]["ms_per_step"]
    lines = ["# Training beside a busy process: torch's default threads vs `threads = \"auto\"` "
             "(`benchmarks/threads_contention.py`)", "",
             f"Recipe `{args.recipe}`, {args.steps} steps per run, mean step time from step 50 by the training log's clock. "
             f"Competitor: a second run of the same recipe with {cpus} threads. Machine: {platform.machine()}, {cpus} usable "
             f"CPUs, torch {torch.__version__}. Fair share beside one equal competitor: 2x; target: at most 2.5x.", "",
             "| threads setting | threads used | beside a busy process | ms/step | vs quiet default |", "|---|---|---|---|---|"]
    for r in results:
        label = f"{r['threads_setting']} (torch's default)" if r["threads_setting"] != "auto" else "auto"
        lines.append(f"| {label} | {r['threads_used']} | {'yes' if r['competitor'] else 'no'} | {r['ms_per_step']} | "
                     f"{r['ms_per_step'] / quiet:.2f}x |")
    write_results(args.out, "threads-contention", "\n".join(lines) + "\n", results)


if __name__ == "__main__":
    main()
