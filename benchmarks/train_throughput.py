"""Training speed: dalle-kit against a hand-written loop (in one process), then whole runs of both profiles.

    python benchmarks/train_throughput.py [--recipe shapes] [--steps 200] [--out benchmarks/results] [--name NAME]

Part 1, in this process (benchmarks/hand_loop.py): the same GAN step written by hand with torch only, the gan
pipeline's ``train_step`` with ``[train] profile = "standard"`` and with ``"fast"``, from the same initial weights,
interleaved (5 rounds of 60 steps after 10 warm-up steps, median), at batch 64 and 128: ms/step, images/s, achieved
GFLOP/s (FLOPs of a step counted by ``torch.utils.flop_counter.FlopCounterMode``), the share of the CPU's fp32 peak,
the ratio to the hand loop, and the first step's losses of each. Beside them (``--no-mimicry`` leaves it out)
torch-mimicry's DCGAN32 step at batch 64, written out with torch only (``mimicry_style.py``: a residual network of
256/128 channels with about 100x the FLOPs of the recipe's step, unconditional; 3 steps a round), with its own FLOP
count: its GFLOP/s says what a wider network reaches on this CPU.

Part 2, whole runs through the CLI (trainer, logging, checkpoints included): each configuration trains the recipe in a fresh process with the same thread count (all usable CPUs; set
explicitly, so the automatic choice cannot differ between rows), rounds interleaved (A B A B ...) so that a drift in
the machine's load hits both alike; the table gives the median over rounds. ``fast`` = bf16 autocast where the
hardware has native bf16, channels_last, multi-tensor Adam and one discriminator pass over real and fake. Rows at
batch 64 (the recipe's) and 128.

Both parts go into ``<out>/<name>.{md,json}`` (name: ``train-throughput``; give each machine its own).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from dalle_kit.threads import usable_cpus
from dalle_kit_plugins.bf16 import has_bf16
from hand_loop import compare, cpu_model, report
from timed_runs import timed_run, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="train-throughput", help="results file name (one per machine)")
    parser.add_argument("--hand-steps", type=int, default=60, help="timed steps per round of part 1")
    parser.add_argument("--no-mimicry", dest="mimicry", action="store_false",
                        help="part 1 without torch-mimicry's DCGAN32 step (mimicry_style.py)")
    args = parser.parse_args()
    cpus = usable_cpus()
    in_process = []
    for batch in (64, 128):
        in_process.append(compare(args.recipe, batch, steps=args.hand_steps, threads=cpus,
                                  mimicry=args.mimicry and batch == 64))
        print(report(in_process[-1]), flush=True)
    configs = [(profile, batch) for batch in (64, 128) for profile in ("standard", "fast")]
    times: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for profile, batch in configs:
                result = timed_run(args.recipe, Path(tmp) / f"{profile}-{batch}-{r}", args.steps,
                                   [f'train.profile="{profile}"', f"train.batch_size={batch}"], threads=cpus)
                times[(profile, batch)].append(result)
                print(json.dumps({"profile": profile, **result}), flush=True)
    results = [{"profile": p, "batch": b, "ms_per_step": round(statistics.median(x["ms_per_step"] for x in times[(p, b)]), 1),
                "images_per_s": round(statistics.median(x["images_per_s"] for x in times[(p, b)]), 1), "rounds": times[(p, b)]}
               for p, b in configs]
    peak = in_process[0]
    lines = ["# Training speed: dalle-kit against a hand-written loop, and whole runs (`benchmarks/train_throughput.py`)", "",
             f"Machine: {cpu_model()} ({platform.machine()}), {cpus} usable CPUs, native bf16: "
             f"{has_bf16(torch.device('cpu'))}, torch {torch.__version__}; fp32 peak {peak['peak_gflops']} GFLOP/s "
             f"({peak['peak']}).", "",
             "## 1. The same step, in one process: hand-written loop, dalle-kit standard, dalle-kit fast", "",
             f"Recipe `{args.recipe}`; {peak['rounds']} interleaved rounds of {peak['steps']} steps after 10 warm-up "
             f"steps, median; FLOPs of one step by `FlopCounterMode` on the hand loop (convolutions and matmuls, forward "
             f"and backward; the dalle-kit steps do the same work). The hand loop is fp32 and contiguous, torch only "
             f"(`benchmarks/hand_loop.py`). The mimicry-style row, where present, is torch-mimicry's DCGAN32 step "
             f"(`benchmarks/mimicry_style.py`, checked equal to torch-mimicry 0.1.16's own classes), unconditional, with "
             f"its own FLOP count and 3 timed steps a round: compare its GFLOP/s, not its step time.", "",
             "| batch | contestant | ms/step | images/s | GFLOP a step | GFLOP/s | of fp32 peak | vs hand loop | "
             "first step's losses (d, g) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in in_process:
        for row in result["rows"]:
            losses = result["first_losses"][row["contestant"]]
            lines.append(f"| {result['batch']} | {row['contestant']} | {row['ms_per_step']} | {row['images_per_s']} | "
                         f"{row['gflop_per_step']} | {row['gflops']} | {row['of_peak']:.0%} | {row['vs_hand']:.2f}x | "
                         f"{losses['loss_d']:.6f}, {losses['loss_g']:.6f} |")
    lines += ["", "## 2. Whole runs through the CLI: `[train] profile = \"standard\"` vs `\"fast\"`", "",
             f"Recipe `{args.recipe}` (gan pipeline), {args.steps} steps per run, timed from step 50 by the training log's "
             f"clock, median of {args.rounds} interleaved rounds, {cpus} threads.", "",
             "| profile | batch | ms/step | images/s | vs standard at batch 64 |", "|---|---|---|---|---|"]
    base = results[0]["images_per_s"]
    for r in results:
        lines.append(f"| {r['profile']} | {r['batch']} | {r['ms_per_step']} | {r['images_per_s']} | {r['images_per_s'] / base:.2f}x |")
    write_results(args.out, args.name, "\n".join(lines) + "\n", {"in_process": in_process, "whole_runs": results})


if __name__ == "__main__":
    main()
