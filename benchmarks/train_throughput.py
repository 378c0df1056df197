"""Training throughput: dalle-kit's GAN step against the same step written by hand and torch-mimicry's, then whole runs.

    .venv/bin/python benchmarks/train_throughput.py [--recipe shapes] [--steps 200] [--rounds 3] [--no-mimicry]
                                                    [--smoke] [--record]

Part 1, in one process. Three contestants train the recipe's networks (the shapes recipe: DCGAN 32/32 with a
bag-of-words text encoder, hinge loss, matching-aware D, mode seeking) from the same initial weights and seeds:

- ``hand``: a plain loop written here with torch only: draw a batch, D on real / fake / mismatched pairs, hinge
  loss, Adam; then G against the updated D plus the mode-seeking term, Adam. fp32, contiguous tensors.
- ``dalle-kit standard`` and ``dalle-kit fast``: the gan pipeline's own ``train_step`` (``setup()`` of
  ``[train] profile = "standard"`` / ``"fast"``), called directly; the trainer's bookkeeping around it is left out.
- ``mimicry-style DCGAN32`` (at the first batch size; ``--no-mimicry`` leaves it out): torch-mimicry's DCGAN32 step
  (``_mimicry.py``: residual blocks, G 256 / D 128 channels, unconditional, on the same images). Its FLOPs are
  counted on its own step, which does far more work than the others, so compare its GFLOP/s, not its step time; it
  runs a few steps a round after one untimed one.

Each round runs every contestant for ``--hand-steps`` steps (after warm-up ones) in turn; the median over rounds
counts. FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the hand loop (matmuls
and convolutions, forward and backward; the same work as the standard step) and divided by each contestant's step
time; the nominal fp32 peak is described in ``_common.peak_gflops``. The first step's losses of every contestant
are printed beside its time: the hand loop and dalle-kit standard do the same step, so they give the same numbers.

Part 2, whole runs through the CLI (trainer, logging, checkpoints included): each configuration trains the recipe in
a fresh process with the same thread count (all usable CPUs, set explicitly), rounds interleaved (A B A B ...) so
that a drift in the machine's load hits both alike; the median over rounds counts. ``fast`` = bf16 autocast where
the hardware has native bf16, channels_last, multi-tensor Adam and one discriminator pass over real and fake.

Results: benchmarks/results/train-throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from _common import Table, add_arguments, emit, peak_gflops, timed_run, usable_cpus

MIMICRY = "mimicry-style DCGAN32"


def training(recipe_name: str, batch: int, profile: str, tmp: Path, overrides: Sequence[str] = ()):
    """The gan pipeline's Training for the recipe, built as a run would build it (nothing is written)."""
    from dalle_kit.recipe import load_recipe
    from dalle_kit.registry import get_registry
    from dalle_kit.run import Run

    registry = get_registry()
    recipe = load_recipe(recipe_name, registry, [*overrides, f"train.batch_size={batch}", f'train.profile="{profile}"'])
    run = Run(tmp, recipe, registry, quiet=True)
    torch.manual_seed(recipe.seed)  # what the trainer does before setup: the same initial weights every time
    pipeline = recipe.pipeline.info.cls(recipe.train)
    return pipeline.setup(run, None), run, recipe


def hand_loop(recipe_name: str, batch: int, tmp: Path, overrides: Sequence[str] = ()):
    """The same networks and seeds, and a step written out with plain torch."""
    t, run, recipe = training(recipe_name, batch, "standard", tmp, overrides)  # only for its freshly built networks
    encoder, G, D = t.modules["text_encoder"], t.modules["generator"], t.modules["discriminator"]
    cfg = recipe.train
    train_set = run.parts.dataset().load("train")
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(
        [p for p in D.parameters() if p.requires_grad] + [p for p in encoder.parameters() if p.requires_grad],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    data_rng = torch.Generator().manual_seed(recipe.seed + 1)
    noise_rng = torch.Generator().manual_seed(recipe.seed + 2)
    relu = torch.nn.functional.relu

    def step() -> dict[str, float]:
        idx = torch.randint(len(train_set.images), (batch,), generator=data_rng)
        real = train_set.images[idx].float().div(127.5).sub(1.0)
        captions = [train_set.captions[int(i)] for i in idx]
        z = torch.randn(batch, G.latent_dim, generator=noise_rng)
        text = encoder(captions)
        fake = G(z, text.detach())
        d_real, d_fake, d_wrong = D(real, text), D(fake.detach(), text), D(real, text.roll(1, dims=0))
        d_loss = relu(1 - d_real).mean() + relu(1 + torch.cat([d_fake, d_wrong])).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = -D(fake, text.detach()).mean()
        z2 = torch.randn(batch, G.latent_dim, generator=noise_rng)
        fake2 = G(z2, text.detach())
        ratio = (fake - fake2).abs().mean() / (z - z2).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        (g_loss + cfg.mode_seeking / (ratio + 1e-5)).backward()
        opt_g.step()
        D.requires_grad_(True)
        return {"loss_d": d_loss.item(), "loss_g": g_loss.item()}

    return step, train_set.images


def counted(step) -> tuple[dict[str, float], int]:
    """One step's losses and its FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        losses = step()
    return losses, counter.get_total_flops()


def in_process(
    recipe: str,
    batch: int,
    overrides: Sequence[str],
    *,
    steps: int,
    warmup: int,
    rounds: int,
    threads: int,
    mimicry_batch: int | None,
    mimicry_steps: int,
    mimicry_widths: tuple[int, int] = (256, 128),
) -> dict:
    """Time the contestants of part 1, interleaved in this process."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        hand, images = hand_loop(recipe, batch, Path(tmp), overrides)
        contestants = {"hand": hand}
        for profile in ("standard", "fast"):
            t, _, _ = training(recipe, batch, profile, Path(tmp), overrides)
            contestants[f"dalle-kit {profile}"] = (lambda f: lambda: f(0))(t.train_step)
        if mimicry_batch:
            from _mimicry import mimicry_step

            contestants[MIMICRY] = mimicry_step(images, mimicry_batch, ngf=mimicry_widths[0], ndf=mimicry_widths[1])
        first, work = {}, {}
        for name, step in contestants.items():  # each one's first step from the same state, FLOPs counted on it
            first[name], work[name] = counted(step) if name in ("hand", MIMICRY) else (step(), None)
        work = {name: work[name] or work["hand"] for name in contestants}  # the dalle-kit steps do the hand loop's work
        counts = {name: (mimicry_steps, 1) if name == MIMICRY else (steps, warmup) for name in contestants}
        for name, step in contestants.items():
            for _ in range(counts[name][1]):
                step()
        times: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(rounds):
            for name, step in contestants.items():
                t0 = time.perf_counter()
                for _ in range(counts[name][0]):
                    step()
                times[name].append((time.perf_counter() - t0) / counts[name][0])
    peak, how = peak_gflops(threads)
    hand_s = statistics.median(times["hand"])
    rows = []
    for name, ts in times.items():
        s = statistics.median(ts)
        b = mimicry_batch if name == MIMICRY else batch
        rows.append(
            {
                "batch": b,
                "contestant": name,
                "ms_per_step": 1000 * s,
                "images_per_s": b / s,
                "gflop_per_step": work[name] / 1e9,
                "gflops": work[name] / s / 1e9,
                "of_peak": work[name] / s / 1e9 / peak,
                "vs_hand": hand_s / s,
                "losses": first[name],
            }
        )
    return {"rows": rows, "peak": how, "peak_gflops": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--steps", type=int, default=200, help="steps of each whole run (part 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of whole runs (part 2)")
    parser.add_argument("--hand-steps", type=int, default=60, help="timed steps per round of part 1")
    parser.add_argument("--hand-rounds", type=int, default=5, help="interleaved rounds of part 1")
    parser.add_argument(
        "--no-mimicry",
        dest="mimicry",
        action="store_false",
        help="part 1 without torch-mimicry's DCGAN32 step (_mimicry.py)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    cpus = 1 if args.smoke else usable_cpus()  # a smoke run on a busy machine: no threads spinning against it
    batches, warmup, mimicry_steps, log_every, overrides = (64, 128), 10, 3, 25, []
    if args.smoke:  # a small train split: drawing the shapes would take longer than the steps
        batches, warmup, mimicry_steps, log_every, overrides = (8,), 1, 1, 1, ["data.train_size=256"]
        args.steps, args.rounds, args.hand_steps, args.hand_rounds = 4, 1, 2, 1

    step_table = Table(
        "The same step in one process",
        [
            "recipe",
            "threads",
            "batch",
            "contestant",
            "ms/step",
            "images/s",
            "GFLOP a step",
            "GFLOP/s",
            "of fp32 peak",
            "vs hand loop",
            "first step's losses (d, g)",
        ],
    )
    peaks = []
    for i, batch in enumerate(batches):
        mimicry_batch = (2 if args.smoke else batch) if args.mimicry and i == 0 else None
        result = in_process(
            args.recipe,
            batch,
            overrides,
            steps=args.hand_steps,
            warmup=warmup,
            rounds=args.hand_rounds,
            threads=cpus,
            mimicry_batch=mimicry_batch,
            mimicry_steps=mimicry_steps,
            mimicry_widths=(16, 16) if args.smoke else (256, 128),
        )
        peaks.append(f"{result['peak_gflops']:.0f} GFLOP/s ({result['peak']})")
        for r in result["rows"]:
            step_table.add(
                args.recipe,
                cpus,
                r["batch"],
                r["contestant"],
                f"{r['ms_per_step']:.1f}",
                f"{r['images_per_s']:.1f}",
                f"{r['gflop_per_step']:.2f}",
                f"{r['gflops']:.1f}",
                f"{r['of_peak']:.0%}",
                f"{r['vs_hand']:.2f}x",
                f"{r['losses']['loss_d']:.6f}, {r['losses']['loss_g']:.6f}",
            )

    configs = [(profile, batch) for batch in batches for profile in ("standard", "fast")]
    times: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="train-throughput-runs-") as tmp:
        for r in range(args.rounds):
            for profile, batch in configs:
                times[(profile, batch)].append(
                    timed_run(
                        args.recipe,
                        Path(tmp) / f"{profile}-{batch}-{r}",
                        args.steps,
                        [*overrides, f'train.profile="{profile}"', f"train.batch_size={batch}"],
                        threads=cpus,
                        log_every=log_every,
                    )
                )
    run_table = Table(
        "Whole runs through the CLI",
        [
            "recipe",
            "steps",
            "rounds",
            "threads",
            "profile",
            "batch",
            "ms/step",
            "images/s",
            "vs standard at the first batch",
        ],
    )
    medians = {c: statistics.median(x["images_per_s"] for x in times[c]) for c in configs}
    for profile, batch in configs:
        ms = statistics.median(x["ms_per_step"] for x in times[(profile, batch)])
        run_table.add(
            args.recipe,
            args.steps,
            args.rounds,
            cpus,
            profile,
            batch,
            f"{ms:.1f}",
            f"{medians[(profile, batch)]:.1f}",
            f"{medians[(profile, batch)] / medians[configs[0]]:.2f}x",
        )
    protocol = (
        f"part 1: {args.hand_rounds} interleaved rounds of {args.hand_steps} steps after {warmup} warm-up "
        f"steps, median; FLOPs by FlopCounterMode; fp32 peak {'; '.join(dict.fromkeys(peaks))}. Part 2: "
        f"{args.steps} steps a run, timed from the second logged step (log every {log_every}) by the "
        f"training log's clock, median of {args.rounds} interleaved rounds"
    )
    emit("train-throughput", protocol, [step_table, run_table], record=args.record, smoke=args.smoke)


if __name__ == "__main__":
    main()
