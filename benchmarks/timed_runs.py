"""Shared by the training benchmarks: train a recipe in a fresh process and read its speed off the training log.

The rate is taken from the log's own clock between the second logged step (step 50 at ``log_every = 25``: the first
steps warm up allocators and caches) and the last, so start-up, data loading and the final checkpoint stay outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from dalle_kit.checkpoint import list_checkpoints, load_state


def command(recipe: str, runs: Path, steps: int, overrides: Sequence[str] = (), nproc: int = 1) -> list[str]:
    args = [sys.executable, "-m", "dalle_kit", "run", recipe, "--runs-dir", str(runs), "-q", "--set", f"train.steps={steps}",
            "--set", "train.log_every=25", "--set", f"train.checkpoint_every={steps}", "--set", "sample.every=0",
            "--set", "eval.metrics=[]"]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return args + [a for o in overrides for a in ("--set", o)]


def timed_run(recipe: str, runs: Path, steps: int, overrides: Sequence[str] = (), *, nproc: int = 1,
              threads: int | None = None) -> dict:
    """Train in a fresh process (``threads``: its OMP_NUM_THREADS, None: unset) and return its measured speed."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    args = command(recipe, runs, steps, overrides, nproc)
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    (run_dir,) = runs.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    first, last = train[1], train[-1]
    batch = tomllib.loads((run_dir / "recipe.toml").read_text())["train"]["batch_size"]
    seconds, steps_timed = last["time"] - first["time"], last["step"] - first["step"]
    ((_, checkpoint),) = list_checkpoints(run_dir / "checkpoints")[-1:]
    return {"processes": nproc, "batch_per_process": batch, "steps_timed": steps_timed, "seconds": round(seconds, 2),
            "ms_per_step": round(1000 * seconds / steps_timed, 1),
            "images_per_s": round(steps_timed * batch * nproc / seconds, 1),
            "threads_used": load_state(checkpoint, ("trainer",)).get("trainer", {}).get("threads"),
            "last_losses": {k: v for k, v in last.items() if k.startswith("loss")}}


def write_results(out: str | Path, name: str, text: str, results: list[dict] | dict) -> None:
    """Print the Markdown table and write it, with the raw results, as ``<out>/<name>.{md,json}``."""
    print(text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
