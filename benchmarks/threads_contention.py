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
import sys
import tempfile
import time
from pathlib import Path

import torch

from dalle_kit.checkpoint import list_checkpoints, load_state
from dalle_kit.threads import usable_cpus


def command(recipe: str, runs: Path, steps: int, threads: str) -> list[str]:
    return [sys.executable, "-m", "dalle_kit", "run", recipe, "--runs-dir", str(runs), "-q", "--set", f"train.steps={steps}",
            "--set", "train.log_every=25", "--set", f"train.checkpoint_every={steps}", "--set", "sample.every=0",
            "--set", "eval.metrics=[]", "--set", f"train.threads={threads}"]


def measure(recipe: str, steps: int, threads: str, competitor: bool, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    rival = None
    if competitor:
        rival = subprocess.Popen(command(recipe, tmp / "rival", 100000, str(usable_cpus())), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)
    runs = tmp / f"run-{threads}-{competitor}"
    try:
        subprocess.run(command(recipe, runs, steps, threads), env=env, check=True, capture_output=True)
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    (run_dir,) = runs.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    ((_, last_checkpoint),) = list_checkpoints(run_dir / "checkpoints")[-1:]
    chosen = load_state(last_checkpoint, ("trainer",))["trainer"]["threads"]
    first, last = train[1], train[-1]
    return {"threads_setting": threads, "threads_used": chosen, "competitor": competitor,
            "ms_per_step": round(1000 * (last["time"] - first["time"]) / (last["step"] - first["step"]), 1)}


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
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads-contention.md").write_text(text)
    (out / "threads-contention.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
