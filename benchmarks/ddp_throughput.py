"""Images per second of one training recipe in 1 and in N processes (torchrun, DistributedDataParallel), side by side.

    .venv/bin/python benchmarks/ddp_throughput.py [--recipe shapes] [--steps 200] [--nproc 2] [--smoke] [--record]

Each configuration trains the same recipe for ``--steps`` steps in fresh processes (per-process batch = the recipe's
batch_size); the rate is taken from the training log's clock between the second logged step and the last (start-up,
data loading and the final checkpoint are outside it): images/s = steps x batch_size x processes / seconds. On the
CPU the machine's cores are shared out: 1 process with all of them as threads, N processes with cores/N threads
each, and 1 process on the N-process global batch. Where CUDA is available, 1 process on 1 GPU is measured too.

Results: benchmarks/results/ddp-throughput.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _common import Table, add_arguments, emit, timed_run, usable_cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    add_arguments(parser)
    args = parser.parse_args()
    cores = 1 if args.smoke else usable_cpus()  # a smoke run on a busy machine: one thread a process
    log_every, overrides = 25, []
    if args.smoke:  # a small train split and batch: drawing the shapes would take longer than the steps
        args.steps, log_every, overrides = 4, 1, ["data.train_size=256", "train.batch_size=8"]
    # (processes, threads each, device, batch scale): the last CPU row is one process on the N-process global batch.
    configs = [(1, cores, "cpu", 1), (args.nproc, max(1, cores // args.nproc), "cpu", 1)]
    if not args.smoke:
        configs.append((1, cores, "cpu", args.nproc))
    if torch.cuda.is_available():
        configs += [(1, cores, "cuda", 1), (1, cores, "cuda", args.nproc)]
    base_batch = None
    results = []
    with tempfile.TemporaryDirectory(prefix="ddp-throughput-") as tmp:
        for i, (nproc, threads, device, scale) in enumerate(configs):
            extra = [f"device={device}"] + ([f"train.batch_size={base_batch * scale}"] if scale > 1 else [])
            result = timed_run(
                args.recipe,
                Path(tmp) / str(i),
                args.steps,
                [*overrides, *extra],
                nproc=nproc,
                threads=threads,
                log_every=log_every,
            )
            base_batch = base_batch or result["batch_per_process"]
            results.append({"threads_each": threads, "device": device, **result})
    table = Table(
        "Images per second in 1 and N processes",
        ["recipe", "steps", "processes", "threads each", "device", "batch per process", "images/s", "vs 1 process"],
    )
    for r in results:
        table.add(
            args.recipe,
            args.steps,
            r["processes"],
            r["threads_each"],
            r["device"],
            r["batch_per_process"],
            r["images_per_s"],
            f"{r['images_per_s'] / results[0]['images_per_s']:.2f}x",
        )
    protocol = (
        f"each configuration one run of {args.steps} steps in fresh processes, timed from the second logged "
        f"step (log every {log_every}) to the last by the training log's clock"
    )
    emit("ddp-throughput", protocol, [table], record=args.record, smoke=args.smoke)


if __name__ == "__main__":
    main()
