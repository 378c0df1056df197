"""Diversity within a prompt, cheaply: mean pairwise pixel L1 among images drawn for the same caption.

    .venv/bin/python benchmarks/diversity.py RUN_DIR [RUN_DIR ...] [--prompts 50] [--per-prompt 8] [--seed 0]

For each prompt, `--per-prompt` images are generated (noise from torch.Generator(seed)) and their mean
pairwise L1 distance is taken (pixels in [0, 1], averaged over pixels and channels). The same number
is computed on real shapes test images that match everything the caption states (all pairs of up
to 64 of them): that is the spread the caption leaves open (size, position, jitter, background).
Prompts: the recipe's [sample] prompts (the grid), then `--prompts` captions drawn (seeded) from the
test split. Prints one column per run and the ratio generated / real (1.0: as diverse as the data;
near 0: the generator ignores its noise). No Inception, a few seconds per run on a CPU.

Short prompts: for each of the 18 colour + shape captions ("a red circle", which leave size and position open),
`--per-prompt` images are drawn and counted as one solid object when the pixels brighter than half the colour's
peak form exactly one region of at least 6 pixels and that region covers at least 25 (a small shape covers about
50; doubled, faint and empty draws fail). Prints the fraction of such draws and how many prompts reach 7 of 8;
the same test passes on every real test image.

For a `dcgan` generator it also prints the noise share of its first layer: z and the projected text
enter one transposed convolution (on a 1x1 input, so linear in each), and the share is
Var(W_z z) / (Var(W_z z) + Var_prompts(W_t t)) summed over that layer's outputs, with z ~ N(0, I)
and t over the test captions: how much of what the generator starts from is noise rather than text.
"""

from __future__ import annotations

import argparse

import torch

from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins.data.shapes import ATTRIBUTES, COLOURS, SHAPES, parse_caption


def pairwise_l1(images: torch.Tensor) -> float:
    """Mean L1 distance over all unordered pairs of images (float in [0, 1], any shape [N, ...])."""
    flat = images.flatten(1).float()
    n = len(flat)
    if n < 2:
        return float("nan")
    d = torch.cdist(flat, flat, p=1) / flat.shape[1]
    return float(d.sum() / (n * (n - 1)))


def real_spread(test, prompt: str, limit: int = 64) -> float:
    stated = parse_caption(prompt)
    keep = torch.ones(len(test.images), dtype=torch.bool)
    for key, value in stated.items():
        keep &= test.attributes[key] == ATTRIBUTES[key].index(value)
    idx = keep.nonzero().flatten()[:limit]
    return pairwise_l1(test.images[idx].float() / 255)


def choose_prompts(run: Run, test, extra: int, seed: int) -> list[str]:
    prompts = list(run.recipe.sample.prompts)
    g = torch.Generator().manual_seed(seed)
    prompts += [test.captions[i] for i in torch.randperm(len(test.captions), generator=g)[:extra].tolist()]
    return prompts


def generated_spread(run: Run, prompts: list[str], per_prompt: int, seed: int) -> list[float]:
    pipeline = run.recipe.pipeline.info.cls(run.recipe.train)
    draw = pipeline.sampler(run)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            images = (draw([prompt] * per_prompt, g).float().clamp(-1, 1) + 1) / 2
            out.append(pairwise_l1(images))
    return out


def one_solid_object(image: torch.Tensor, colour: str) -> bool:
    """Whether a uint8 image [3, H, W] shows one solid object of `colour` (see the module doc)."""
    import numpy as np
    from scipy import ndimage

    bright = (image.float().amax(0) > 0.5 * max(COLOURS[colour])).numpy()
    labels, n = ndimage.label(bright, structure=np.ones((3, 3)))
    sizes = ndimage.sum(bright, labels, range(1, n + 1)) if n else []
    regions = [size for size in sizes if size >= 6]
    return len(regions) == 1 and max(regions) >= 25


def short_prompt_objects(run: Run, per_prompt: int, seed: int) -> tuple[float, int, int]:
    """(fraction of draws with one solid object, prompts with at least 7 of 8 such draws, prompts) over the colour +
    shape captions."""
    prompts = [(f"a {c} {s}", c) for c in COLOURS for s in SHAPES]
    draw = run.recipe.pipeline.info.cls(run.recipe.train).sampler(run)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        images = draw([p for p, _ in prompts for _ in range(per_prompt)], g)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    right = [one_solid_object(images[i], prompts[i // per_prompt][1]) for i in range(len(images))]
    per = [sum(right[i * per_prompt:(i + 1) * per_prompt]) for i in range(len(prompts))]
    return sum(right) / len(right), sum(k >= 7 * per_prompt / 8 for k in per), len(prompts)


def noise_share(run: Run, captions: list[str]) -> float | None:
    """First-layer noise share of a dcgan generator (see the module doc); None for other generators."""
    pipeline = run.recipe.pipeline.info.cls(run.recipe.train)
    parts, _ = pipeline._load(run)
    generator, encoder = parts["generator"], parts["text_encoder"]
    first = getattr(generator, "net", [None])[0]
    if not isinstance(first, torch.nn.ConvTranspose2d) or not hasattr(generator, "text_proj"):
        return None
    weight = first.weight.detach().float().flatten(2)  # [in, out, k*k]
    w_z, w_t = weight[: generator.latent_dim], weight[generator.latent_dim:]
    var_z = w_z.square().sum(0)  # z ~ N(0, I): the variance of each output
    text = generator.text_proj(encoder(captions)).float()  # [N, text_embed]
    var_t = torch.einsum("nc,cok->nok", text, w_t).var(0)
    return float(var_z.sum() / (var_z.sum() + var_t.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--prompts", type=int, default=50, help="test captions on top of the grid prompts")
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="only the summary lines")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    registry = get_registry()
    runs = [Run.open(d, registry, quiet=True) for d in args.runs]
    test = runs[0].build_dataset().load("test")
    prompts = choose_prompts(runs[0], test, args.prompts, args.seed)
    real = [real_spread(test, p) for p in prompts]
    gen = {d: generated_spread(r, prompts, args.per_prompt, args.seed) for d, r in zip(args.runs, runs)}
    names = ["/".join(d.rstrip("/").split("/")[-2:]) for d in args.runs]
    if not args.quiet:
        print(f"{'prompt':45s} {'real':>7s} " + " ".join(f"{n[-24:]:>24s}" for n in names))
        for i, p in enumerate(prompts[: len(runs[0].recipe.sample.prompts)]):
            print(f"{p[:45]:45s} {real[i]:7.4f} " + " ".join(f"{gen[d][i]:24.4f}" for d in args.runs))
    mean_real = sum(real) / len(real)
    print(f"pixel diversity (mean pairwise L1 within a prompt, {len(prompts)} prompts x {args.per_prompt}, seed {args.seed}): "
          f"real {mean_real:.4f}")
    for d, n in zip(args.runs, names):
        m = sum(gen[d]) / len(gen[d])
        ratio = sum(g / r for g, r in zip(gen[d], real)) / len(real)
        share = noise_share(runs[names.index(n)], test.captions)
        extra = f"  first-layer noise share {share:.3f}" if share is not None else ""
        print(f"  {n}: generated {m:.4f}  mean ratio generated/real {ratio:.3f}{extra}")
    real_ok = [one_solid_object(test.images[i], parse_caption(test.captions[i])["colour"]) for i in range(500)]
    print(f"one solid object for a colour + shape prompt ({args.per_prompt} draws each, seed {args.seed}): "
          f"real test images {sum(real_ok) / len(real_ok):.3f}")
    for d, n in zip(args.runs, names):
        fraction, good, total = short_prompt_objects(runs[names.index(n)], args.per_prompt, args.seed)
        print(f"  {n}: {fraction:.3f} of the draws; {good} of {total} prompts at 7 of 8 or better")


if __name__ == "__main__":
    main()
