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
import tempfile
from pathlib import Path

import torch
from timed_runs import timed_run, write_results


def train(recipe: str, steps: int, nproc: int, threads: int, device: str, runs: Path, batch_scale: int = 1) -> dict:
    overrides = [f"device={device}"]
    if batch_scale > 1:
        overrides.append(f"train.batch_size={_recipe_batch(recipe) * batch_scale}")
    return {"threads_each": threads, "device": device, **timed_run(recipe, runs, steps, overrides, nproc=nproc, threads=threads)}


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
    write_results(args.out, "ddp-throughput", "\n".join(lines) + "\n", results)


if __name__ == "__main__":
    main()
