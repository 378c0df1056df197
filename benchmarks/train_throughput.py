"""Training speed of the gan pipeline's profiles side by side: ``standard`` vs ``fast`` ([train] profile).

    python benchmarks/train_throughput.py [--recipe shapes] [--steps 200] [--out benchmarks/results]

Each configuration trains the recipe in a fresh process with the same thread count (all usable CPUs; set
explicitly, so the automatic choice cannot differ between rows), rounds interleaved (A B A B ...) so that a drift in
the machine's load hits both alike; the table gives the median over rounds. ``fast`` = bf16 autocast where the
hardware has native bf16, channels_last, multi-tensor Adam and one discriminator pass over real and fake. Rows at
batch 64 (the recipe's) and 128.
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
from timed_runs import timed_run, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    cpus = usable_cpus()
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
    lines = ["# Training speed: `[train] profile = \"standard\"` vs `\"fast\"` (`benchmarks/train_throughput.py`)", "",
             f"Recipe `{args.recipe}` (gan pipeline), {args.steps} steps per run, timed from step 50 by the training log's "
             f"clock, median of {args.rounds} interleaved rounds, {cpus} threads. Machine: {platform.machine()}, {cpus} usable "
             f"CPUs, native bf16: {has_bf16(torch.device('cpu'))}; torch {torch.__version__}.", "",
             "| profile | batch | ms/step | images/s | vs standard at batch 64 |", "|---|---|---|---|---|"]
    base = results[0]["images_per_s"]
    for r in results:
        lines.append(f"| {r['profile']} | {r['batch']} | {r['ms_per_step']} | {r['images_per_s']} | {r['images_per_s'] / base:.2f}x |")
    write_results(args.out, "train-throughput", "\n".join(lines) + "\n", results)


if __name__ == "__main__":
    main()
