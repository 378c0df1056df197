"""Images per second of one training recipe in 1 and in N processes (torchrun, DistributedDataParallel), side by side.

    python benchmarks/ddp_throughput.py [--recipe shapes] [--steps 200] [--nproc 2] [--out benchmarks/results]

Each configuration trains the same recipe for ``--steps`` steps (per-process batch = the recipe's batch_size); the
rate is taken from the training log's clock between the first logged step after warm-up and the last (start-up,
data loading and the final checkpoint are outside it): images/s = steps x batch_size x processes / seconds. On the
CPU the machine's cores are shared out: 1 process with all of them as threads, and N processes with cores/N threads
each. Where CUDA is available, 1 process on 1 GPU is measured too. Prints a table and writes it as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def train(recipe: str, steps: int, nproc: int, threads: int, device: str, runs: Path, batch_scale: int = 1) -> dict:
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-m", "dalle_kit", "run", recipe, "--runs-dir", str(runs), "-q", "--nproc", str(nproc),
            "--set", f"train.steps={steps}", "--set", "train.log_every=25", "--set", f"train.checkpoint_every={steps}",
            "--set", "sample.every=0", "--set", "eval.metrics=[]", "--set", f"device={device}"]
    if batch_scale > 1:
        args += ["--set", f"train.batch_size={_recipe_batch(recipe) * batch_scale}"]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    (run_dir,) = runs.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    first, last = train_rows[1], train_rows[-1]  # from step 50: the first 25 steps warm up allocators and caches
    batch = _batch_size(run_dir)
    seconds = last["time"] - first["time"]
    images = (last["step"] - first["step"]) * batch * nproc
    return {"processes": nproc, "threads_each": threads, "device": device, "steps_timed": last["step"] - first["step"],
            "batch_per_process": batch, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1),
            "loss_d_last": last.get("loss_d")}


def _batch_size(run_dir: Path) -> int:
    import tomllib

    return tomllib.loads((run_dir / "recipe.toml").read_text())["train"]["batch_size"]


def _recipe_batch(recipe: str) -> int:
    from dalle_kit.recipe import load_recipe
    from dalle_kit.registry import get_registry

    return load_recipe(recipe, get_registry()).train.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    # (processes, threads each, device, batch scale): the last CPU row is one process on the N-process global batch.
    configs = [(1, cores, "cpu", 1), (args.nproc, max(1, cores // args.nproc), "cpu", 1), (1, cores, "cpu", args.nproc)]
    if torch.cuda.is_available():
        configs += [(1, cores, "cuda", 1), (1, cores, "cuda", args.nproc)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (nproc, threads, device, scale) in enumerate(configs):
            results.append(train(args.recipe, args.steps, nproc, threads, device, Path(tmp) / str(i), scale))
            print(json.dumps(results[-1]), flush=True)
    base = results[0]["images_per_s"]
    lines = [f"# Training throughput in 1 and {args.nproc} processes (`benchmarks/ddp_throughput.py`)", "",
             f"Recipe `{args.recipe}`, {args.steps} steps per configuration, timed from step 50 to the last by the "
             "training log's clock; per-process batch = the recipe's batch_size, so N processes train on N times the "
             f"images per step (the last rows: one process on that global batch). Machine: {platform.processor() or platform.machine()}, {cores} usable CPU cores"
             f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}; torch {torch.__version__}.", "",
             "| processes | threads each | device | batch per process | images/s | vs 1 process |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['processes']} | {r['threads_each']} | {r['device']} | {r['batch_per_process']} | "
                     f"{r['images_per_s']} | {r['images_per_s'] / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ddp-throughput.md").write_text(text)
    (out / "ddp-throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
