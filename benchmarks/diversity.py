"""Diversity within a prompt, cheaply: mean pairwise pixel L1 among images drawn for the same caption.

    .venv/bin/python benchmarks/diversity.py RUN_DIR [RUN_DIR ...] [--prompts 50] [--per-prompt 8] [--seed 0]
                                             [--smoke] [--record]

For each prompt, `--per-prompt` images are generated (noise from torch.Generator(seed)) and their mean
pairwise L1 distance is taken (pixels in [0, 1], averaged over pixels and channels). The same number
is computed on real shapes test images that match everything the caption states (all pairs of up
to 64 of them): that is the spread the caption leaves open (size, position, jitter, background).
Prompts: the recipe's [sample] prompts (the grid), then `--prompts` captions drawn (seeded) from the
test split. Prints one column per run and the ratio generated / real (1.0: as diverse as the data;
near 0: the generator ignores its noise). No Inception, a few seconds per run on a CPU.

Short prompts: for each of the 18 colour + shape captions ("a red circle", which leave size and position open),
`--per-prompt` images are drawn and counted as one solid object when the pixels brighter than half the colour's
peak form exactly one region of at least 6 pixels and that region covers at least 25 and at most 40% of the image (a
small shape covers about 50, the largest real one about 200 of 1024; doubled, faint, empty and flooded draws fail). Prints the fraction of such draws and how many prompts reach 7 of 8;
the same test passes on every real test image.

For a `dcgan` generator it also prints the noise share of its first layer: z and the projected text
enter one transposed convolution (on a 1x1 input, so linear in each), and the share is
Var(W_z z) / (Var(W_z z) + Var_prompts(W_t t)) summed over that layer's outputs, with z ~ N(0, I)
and t over the test captions: how much of what the generator starts from is noise rather than text.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import Table, add_arguments, emit

from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import Trainer, sampler
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
    draw = sampler(run)
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
    return len(regions) == 1 and 25 <= max(regions) <= 0.4 * bright.size


def short_prompt_objects(run: Run, per_prompt: int, seed: int) -> tuple[float, int, int]:
    """(fraction of draws with one solid object, prompts with at least 7 of 8 such draws, prompts) over the colour +
    shape captions."""
    prompts = [(f"a {c} {s}", c) for c in COLOURS for s in SHAPES]
    draw = sampler(run)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        images = draw([p for p, _ in prompts for _ in range(per_prompt)], g)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    right = [one_solid_object(images[i], prompts[i // per_prompt][1]) for i in range(len(images))]
    per = [sum(right[i * per_prompt : (i + 1) * per_prompt]) for i in range(len(prompts))]
    return sum(right) / len(right), sum(k >= 7 * per_prompt / 8 for k in per), len(prompts)


def noise_share(run: Run, captions: list[str]) -> float | None:
    """First-layer noise share of a dcgan generator (see the module doc); None for other generators."""
    parts = Trainer.restore(run, run.recipe.pipeline.info.cls(run.recipe.train)).drawing_modules
    generator, encoder = parts["generator"], parts["text_encoder"]
    first = getattr(generator, "net", [None])[0]
    if not isinstance(first, torch.nn.ConvTranspose2d) or not hasattr(generator, "text_proj"):
        return None
    weight = first.weight.detach().float().flatten(2)  # [in, out, k*k]
    w_z, w_t = weight[: generator.latent_dim], weight[generator.latent_dim :]
    var_z = w_z.square().sum(0)  # z ~ N(0, I): the variance of each output
    text = generator.text_proj(encoder(captions)).float()  # [N, text_embed]
    var_t = torch.einsum("nc,cok->nok", text, w_t).var(0)
    return float(var_z.sum() / (var_z.sum() + var_t.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="finished shapes runs (with --smoke: none, two tiny runs are trained)")
    parser.add_argument("--prompts", type=int, default=50, help="test captions on top of the grid prompts")
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="only the tables")
    add_arguments(parser)
    args = parser.parse_args()
    registry = get_registry()
    tmp = None
    if args.smoke:  # two runs of 2 steps on a small split (mode seeking off and on), few prompts
        from dalle_kit import api

        tmp = tempfile.TemporaryDirectory(prefix="diversity-")
        torch.set_num_threads(1)
        tiny = [
            "train.threads=1",
            "train.steps=2",
            "train.batch_size=4",
            "data.train_size=64",
            "data.test_size=200",
            "eval.metrics=[]",
            "sample.every=0",
            "generator.ngf=8",
            "discriminator.ndf=8",
        ]
        args.runs = [
            str(
                api.train(
                    "shapes", [*tiny, f"train.mode_seeking={w}"], runs_dir=tmp.name, quiet=True, registry=registry
                ).dir
            )
            for w in (0.0, 0.1)
        ]
        args.prompts, args.per_prompt, args.quiet = 4, 2, True
    if not args.runs:
        parser.error("name at least one run directory (or --smoke)")
    torch.set_grad_enabled(False)
    runs = [Run.open(d, registry, quiet=True) for d in args.runs]
    test = runs[0].parts.dataset().load("test")
    prompts = choose_prompts(runs[0], test, args.prompts, args.seed)
    real = [real_spread(test, p) for p in prompts]
    gen = {d: generated_spread(r, prompts, args.per_prompt, args.seed) for d, r in zip(args.runs, runs)}
    names = ["/".join(d.rstrip("/").split("/")[-2:]) for d in args.runs]
    if not args.quiet:
        print(f"{'prompt':45s} {'real':>7s} " + " ".join(f"{n[-24:]:>24s}" for n in names))
        for i, p in enumerate(prompts[: len(runs[0].recipe.sample.prompts)]):
            print(f"{p[:45]:45s} {real[i]:7.4f} " + " ".join(f"{gen[d][i]:24.4f}" for d in args.runs))
    limit = min(500, len(test.images))
    real_ok = [one_solid_object(test.images[i], parse_caption(test.captions[i])["colour"]) for i in range(limit)]
    table = Table(
        "Diversity within a prompt and one solid object per short prompt",
        [
            "run",
            "steps",
            "mode_seeking",
            "pixel diversity generated",
            "real",
            "generated / real",
            "first-layer noise share",
            "one solid object (real: %.3f)" % (sum(real_ok) / len(real_ok)),
            "prompts at 7 of 8",
        ],
    )
    kept = [i for i, r in enumerate(real) if r == r]  # prompts that at least two test images match
    mean_real = sum(real[i] for i in kept) / len(kept)
    for d, n, run in zip(args.runs, names, runs):
        ratio = sum(gen[d][i] / real[i] for i in kept) / len(kept)
        share = noise_share(run, test.captions)
        fraction, good, total = short_prompt_objects(run, args.per_prompt, args.seed)
        steps = [r["step"] for r in run.files.read_metrics() if r["kind"] == "train"]
        table.add(
            n,
            steps[-1] if steps else "-",
            getattr(run.recipe.train, "mode_seeking", "-"),
            f"{sum(gen[d][i] for i in kept) / len(kept):.4f}",
            f"{mean_real:.4f}",
            f"{ratio:.3f}",
            "-" if share is None else f"{share:.3f}",
            f"{fraction:.3f}",
            f"{good} of {total}",
        )
    protocol = (
        f"pixel diversity: mean pairwise L1 (pixels in 0..1) among {args.per_prompt} draws per prompt, "
        f"{len(kept)} prompts (the recipe's grid, then test captions drawn with seed {args.seed}; those at "
        "least two test images match); real: "
        "the same among test images matching each caption; one solid object: the 18 colour + shape prompts, "
        f"{args.per_prompt} draws each, seed {args.seed}, real column over {limit} test images"
    )
    emit("diversity", protocol, [table], record=args.record, smoke=args.smoke)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
