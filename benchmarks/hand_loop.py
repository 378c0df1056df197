"""dalle-kit's GAN step against the same step written by hand, interleaved in one process, with achieved GFLOP/s.

    .venv/bin/python benchmarks/hand_loop.py [--recipe shapes] [--batch 64] [--steps 60] [--rounds 5]

(benchmarks/train_throughput.py runs the same comparison at batch 64 and 128 before its whole runs.)

Three contestants train the recipe's networks (the shapes recipe: DCGAN 32/32 with a bag-of-words text encoder,
hinge loss, matching-aware D, mode seeking 0.1) from the same initial weights and seeds:

- ``hand``: a plain loop written here with torch only: draw a batch, D on real / fake / mismatched pairs, hinge
  loss, Adam; then G against the updated D plus the mode-seeking term, Adam. fp32, contiguous tensors.
- ``dalle-kit standard`` and ``dalle-kit fast``: the gan pipeline's own ``train_step`` (``setup()`` of
  ``[train] profile = "standard"`` / ``"fast"``), called directly; the trainer's bookkeeping around it (log rows,
  checkpoint cadence: about 0.06 ms a step) is left out.

Each round runs every contestant for ``--steps`` steps (after ``--warmup`` untimed ones) in turn; the median
over rounds counts. FLOPs of one step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the
hand loop (matmuls and convolutions, forward and backward; the same work as the standard step) and divided by
each contestant's step time. The peak is cores x 2 FMA units x the fp32 lanes of the widest FMA the CPU has (16
with AVX-512, 8 with AVX2) x 2 x the clock from /proc/cpuinfo: an upper bound (on CPUs that split 512-bit FMAs, half
of it; turbo clocks can exceed the listed one).

With ``--mimicry`` a fourth contestant runs torch-mimicry's DCGAN32 step (``mimicry_style.py``: residual blocks,
G 256 / D 128 channels, unconditional, on the same images); its FLOPs are counted on its own step (about 100x the
others': 3x3 convolutions of 256 channels at 32x32), so compare its GFLOP/s, not its step time; it runs
``mimicry_steps`` (3) steps a round after 1 untimed one. The first step's losses of the
hand loop and of dalle-kit standard are printed side by side: the same step gives the same numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from dalle_kit.recipe import load_recipe
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.threads import usable_cpus


def training(recipe_name: str, batch: int, profile: str):
    """The gan pipeline's Training for the recipe, built as a run would build it (no run directory is written)."""
    registry = get_registry()
    recipe = load_recipe(recipe_name, registry, [f"train.batch_size={batch}", f'train.profile="{profile}"'])
    run = Run(tempfile.mkdtemp(prefix="hand-loop-"), recipe, registry, quiet=True)
    torch.manual_seed(recipe.seed)  # what the trainer does before setup: the same initial weights every time
    pipeline = recipe.pipeline.info.cls(recipe.train)
    return pipeline.setup(run, None), run, recipe


MIMICRY = "mimicry-style DCGAN32"


def hand_loop(recipe_name: str, batch: int):
    """The same networks and seeds, and a step written out with plain torch."""
    t, run, recipe = training(recipe_name, batch, "standard")  # only for its freshly built networks
    encoder, G, D = t.modules["text_encoder"], t.modules["generator"], t.modules["discriminator"]
    cfg = recipe.train
    train_set = run.build_dataset().load("train")
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad] +
                             [p for p in encoder.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas)
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

    return step


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type."""
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def fp32_lanes() -> tuple[int, str]:
    """fp32 lanes of one FMA instruction: 16 with AVX-512, 8 with AVX2/FMA (read from /proc/cpuinfo), else 4."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    if "avx512f" in flags:
        return 16, "AVX-512"
    if "avx2" in flags and "fma" in flags:
        return 8, "AVX2"
    return 4, "SSE"


def peak_gflops(cores: int) -> tuple[float, str]:
    mhz = []
    try:
        mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    except OSError:
        pass
    if not mhz:
        return float("nan"), "clock unknown"
    ghz = max(mhz) / 1000
    lanes, isa = fp32_lanes()
    return cores * 2 * lanes * 2 * ghz, f"{cores} cores x 2 FMA x {lanes} fp32 lanes ({isa}) x 2 x {ghz:.2f} GHz"


def compare(recipe: str, batch: int, steps: int = 60, warmup: int = 10, rounds: int = 5, threads: int | None = None,
            mimicry: bool = False, mimicry_steps: int = 3) -> dict:
    """Time the hand loop and the pipeline's standard and fast steps, interleaved in this process; FLOPs and peak."""
    threads = threads or (usable_cpus() if "OMP_NUM_THREADS" not in os.environ else int(os.environ["OMP_NUM_THREADS"]))
    torch.set_num_threads(threads)
    contestants = {"hand": hand_loop(recipe, batch)}
    for profile in ("standard", "fast"):
        t, run, _ = training(recipe, batch, profile)
        contestants[f"dalle-kit {profile}"] = (lambda f: (lambda: f(0)))(t.train_step)
    if mimicry:
        from mimicry_style import mimicry_step

        contestants[MIMICRY] = mimicry_step(run.build_dataset().load("train").images, batch)
    first = {name: step() for name, step in contestants.items()}  # each contestant's first step from the same state

    from torch.utils.flop_counter import FlopCounterMode

    def count(step) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        return counter.get_total_flops()

    hand_flops = count(contestants["hand"])  # the dalle-kit steps do the same work
    flops = {name: count(step) if name == MIMICRY else hand_flops for name, step in contestants.items()}

    # mimicry's step does ~100x the work of the others: a few steps of it a round, after one untimed warm-up step
    counts = {name: (mimicry_steps, 1) if name == MIMICRY else (steps, warmup) for name in contestants}
    for name, step in contestants.items():
        for _ in range(counts[name][1]):
            step()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, step in contestants.items():
            n = counts[name][0]
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            times[name].append((time.perf_counter() - t0) / n)
    peak, how = peak_gflops(threads)
    hand = statistics.median(times["hand"])
    rows = []
    for name, ts in times.items():
        s = statistics.median(ts)
        rows.append({"contestant": name, "ms_per_step": round(1000 * s, 1), "images_per_s": round(batch / s, 1),
                     "gflop_per_step": round(flops[name] / 1e9, 2),
                     "gflops": round(flops[name] / s / 1e9, 1), "of_peak": round(flops[name] / s / 1e9 / peak, 3),
                     "vs_hand": round(hand / s, 3), "rounds_ms": [round(1000 * t, 1) for t in ts]})
    return {"recipe": recipe, "batch": batch, "threads": threads, "torch": torch.__version__, "steps": steps,
            "rounds": rounds, "gflop_per_step": round(hand_flops / 1e9, 2), "peak_gflops": round(peak), "peak": how,
            "rows": rows, "first_losses": first, "steps_per_round": {name: n for name, (n, _) in counts.items()}}


def report(result: dict) -> str:
    """The comparison as printed text."""
    lines = [f"{result['recipe']}, batch {result['batch']}, {result['threads']} threads, torch {result['torch']}; "
             f"{result['rounds']} interleaved rounds of {result['steps']} steps, median; {result['gflop_per_step']:.2f} GFLOP "
             f"a step (FlopCounterMode, hand loop); peak {result['peak_gflops']} GFLOP/s ({result['peak']})",
             f"{'contestant':24s} {'ms/step':>8s} {'img/s':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of peak':>8s} {'vs hand':>8s}"]
    for r in result["rows"]:
        lines.append(f"{r['contestant']:24s} {r['ms_per_step']:8.1f} {r['images_per_s']:8.1f} {r['gflop_per_step']:7.2f} "
                     f"{r['gflops']:8.1f} {r['of_peak']:8.0%} {r['vs_hand']:7.2f}x")
    lines.append("first step's losses: " + "; ".join(f"{n} d {v['loss_d']:.6f} g {v['loss_g']:.6f}"
                                                     for n, v in result["first_losses"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mimicry", action="store_true", help="add torch-mimicry's DCGAN32 step (mimicry_style.py)")
    args = parser.parse_args()
    print(report(compare(args.recipe, args.batch, args.steps, args.warmup, args.rounds, mimicry=args.mimicry)))


if __name__ == "__main__":
    main()
