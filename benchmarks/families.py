"""Model families and recipes side by side: train (or take) runs, score every one with one protocol, in one table;
and for the shapes runs, how diverse their draws for one prompt are and how often a short prompt gives one object.

    .venv/bin/python benchmarks/families.py [--recipes NAME ...] [--runs DIR ...] [--clip RUN] [--candidates K] [--expected]
                                            [--set KEY=VALUE ...] [--runs-dir runs] [-n 1000] [--metrics NAME ...]
                                            [--calibrate] [--tables scores diversity] [--prompts 50]
                                            [--per-prompt 8] [--seed 0] [--diffusion-settings grid]
                                            [--smoke] [--record]

Each recipe of ``--recipes`` (default `FAMILIES`: GAN, VAE, diffusion, DALL-E and unCLIP on shapes, with the CLIP
and the codec the last two build on trained first) is trained at its default length (``--set`` overrides apply to
all of them) into ``--runs-dir``, an earlier run it names (``codec_run``, ``clip_run``) taken from there; each run
of ``--runs`` is taken as it is. Runs that draw no images (a CLIP, a codec) are trained, not scored. Every run is then scored the same way: n generated images
for prompts drawn (seeded) from the dataset's test captions against the first n test images, with the metrics of
``--metrics`` (default per dataset: `DEFAULT_METRICS`) and the run's own ``[eval.<metric>]`` settings, each
score printed with its protocol; ``--clip RUN`` adds CLIPScore and R-precision judged by that clip-pretrain run's
CLIP (in-domain when it trained on the same data), R-precision among ``--candidates`` captions in every row. A diffusion run is
scored at each of `DIFFUSION_SETTINGS` (sampling steps, guidance scale), or with ``--diffusion-settings own`` at its
recipe's own (one setting instead of four). Beside the scores: the run's training
time (its own training clock), the sampling time per image (a batch of 64 images, 8 prompts x 8, after a warm-up
batch) and its ratio to the first row's, the parameters the run trained; for MNIST and Fashion-MNIST the best FID Lucic et al. (2018) published for
the same loss. ``--calibrate`` adds a row with n real train images in the place of generated ones: what a perfect
generator scores under the same protocol.

The second table (`--tables diversity` alone scores nothing with Inception: seconds a run) covers every run on the
shapes data, which states what each caption leaves open:

- Diversity within a prompt: for each prompt, `--per-prompt` images are generated (noise from
  torch.Generator(seed)) and their mean pairwise L1 distance is taken (pixels in [0, 1], averaged over pixels and
  channels). The same number is computed on the run's real test images that match everything the caption states
  (all pairs of up to 64 of them): the spread the caption leaves open (size, position, jitter, background).
  Prompts: the recipe's [sample] prompts, then `--prompts` captions drawn (seeded) from the test split. The ratio
  generated / real is 1.0 when the draws are as diverse as the data, near 0 when the generator ignores its noise.
- One solid object: for each of the 18 colour + shape captions ("a red circle", which leave size and position
  open), `--per-prompt` images are drawn and counted as one solid object when the pixels brighter than half the
  colour's peak form exactly one region of at least 6 pixels and that region covers at least 25 pixels and at most
  40% of the image (doubled, faint, empty and flooded draws fail). The fraction of such draws, and how many prompts
  reach 7 of 8; the header gives the fraction of real test images that pass the same test.
- Modes read: a short prompt leaves 10 (size, position) modes open. For each of the 18 colour + shape captions,
  5 x `--per-prompt` images are drawn and the text-alignment probe reads their size and position; the column is the
  number of distinct modes among them, averaged over the prompts, beside the same count for as many real test images
  matching the caption (drawn with replacement): a generator that collapses to a few sizes and places reads low here
  even when its pixel diversity looks fine. Left out by `--smoke` (the probe trains once per machine).
- For a `dcgan` generator, the noise share of its first layer: z and the projected text enter one transposed
  convolution (on a 1x1 input, so linear in each), and the share is Var(W_z z) / (Var(W_z z) + Var_prompts(W_t t))
  summed over that layer's outputs, with z ~ N(0, I) and t over the test captions: how much of what the generator
  starts from is noise rather than text.

Results: benchmarks/results/families.md (the shapes families; both tables). The tables of shipped recipes that the
docs cite (shapes-recipes.md, mnist.md, fashion-mnist.md) were made by this script's predecessors with the same
metrics; ``--recipes`` or ``--runs`` scores those recipes again.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any
from pathlib import Path

import torch

from _common import Table, add_arguments, emit

DEFAULT_METRICS = {
    "shapes": ["fid", "kid", "text-alignment"],
    "mnist": ["fid", "kid", "prc", "intra-fid", "class-accuracy", "cas"],
    "fashion-mnist": ["fid", "kid", "prc", "intra-fid", "class-accuracy", "cas"],
    "emoji": ["kid"],  # a 203-image test split: KID, not FID (FID's bias at a few hundred images dominates)
    "tuxpaint": ["kid"],
}
# The five families on shapes; a CLIP and a codec are trained first for the two that build on them.
FAMILIES = [
    "shapes",
    "shapes-vae",
    "shapes-diffusion",
    "shapes-clip-pretrain",
    "shapes-dvae",
    "shapes-dalle",
    "shapes-unclip",
]
CLIP_METRICS = ["clip-score", "r-precision"]  # added, judged by --clip's CLIP
DIFFUSION_SETTINGS = [{"sample_steps": s, "guidance_scale": g} for g in (3.0, 1.0) for s in (25, 50)]
PROMPTS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "a large yellow circle in the top left",
    "a small white square in the bottom right",
    "a purple triangle in the center",
    "a small orange circle",
    "a large cyan triangle",
]

# Lucic, Kurach, Michalski, Gelly, Bousquet, "Are GANs Created Equal? A Large-Scale Study", NeurIPS 2018, Table 2:
# best FID of a large-scale hyper-parameter search per model (mean, std over 50 re-runs of the best setting; 10,000
# generated vs 10,000 test images, TF Inception 2015-12-05 pool_3, 28x28 bilinearly resized, grey tiled to RGB;
# unconditional). The GAN rows agree with two reprints (Dai & Wipf 2019, Table 1; a PA-GAN ICLR 2019 submission,
# Table 2); the VAE row was found in neither and is marked unverified.
LUCIC = {  # model: (MNIST, Fashion-MNIST, checked)
    "MM GAN": ((9.8, 0.9), (29.6, 1.6), True),
    "NS GAN": ((6.8, 0.5), (26.5, 1.6), True),
    "LSGAN": ((7.8, 0.6), (30.7, 2.2), True),
    "WGAN": ((6.7, 0.4), (21.5, 1.6), True),
    "WGAN GP": ((20.3, 5.0), (24.5, 2.1), True),
    "DRAGAN": ((7.6, 0.4), (27.7, 1.2), True),
    "BEGAN": ((13.1, 1.0), (22.9, 0.9), True),
    "VAE": ((23.8, 0.6), (58.7, 1.2), False),
}
OURS_TO_LUCIC = {
    "bce": "NS GAN",
    "minimax": "MM GAN",
    "lsgan": "LSGAN",
    "wgan": "WGAN",
    "wgan-gp": "WGAN GP",
    "dragan": "DRAGAN",
    "began": "BEGAN",
    "vae": "VAE",
}
COLUMN = {"mnist": 0, "fashion-mnist": 1}


def published(dataset: str, run) -> str:
    if dataset not in COLUMN:
        return "-"
    parts = run.recipe.parts
    loss = parts["loss"].info.name if "loss" in parts else run.recipe.pipeline.info.name
    model = OURS_TO_LUCIC.get(loss)
    if model is None:
        return "not in the study"
    (mean, std), checked = LUCIC[model][COLUMN[dataset]], LUCIC[model][2]
    return f"{mean} ± {std} ({model}{'' if checked else ', unverified'})"


def seconds_per_image(draw, prompts: list[str], per_prompt: int) -> float:
    prompts = [p for p in prompts for _ in range(per_prompt)]
    draw(prompts[:per_prompt], torch.Generator().manual_seed(1))  # warm-up
    start = time.perf_counter()
    draw(prompts, torch.Generator().manual_seed(0))
    return (time.perf_counter() - start) / len(prompts)


def scores(results: dict) -> str:
    return "; ".join(
        f"{name} " + ", ".join(f"{k} {v:.6g}" for k, v in result.values.items()) for name, result in results.items()
    )


def pairwise_l1(images: torch.Tensor) -> float:
    """Mean L1 distance over all unordered pairs of images (float in [0, 1], any shape [N, ...])."""
    flat = images.flatten(1).float()
    n = len(flat)
    if n < 2:
        return float("nan")
    d = torch.cdist(flat, flat, p=1) / flat.shape[1]
    return float(d.sum() / (n * (n - 1)))


def real_spread(test, prompt: str, limit: int = 64) -> float:
    from dalle_kit_plugins.data.shapes import ATTRIBUTES, parse_caption

    keep = torch.ones(len(test.images), dtype=torch.bool)
    for key, value in parse_caption(prompt).items():
        keep &= test.attributes[key] == ATTRIBUTES[key].index(value)
    idx = keep.nonzero().flatten()[:limit]
    return pairwise_l1(test.images[idx].float() / 255)


def generated_spread(draw, prompts: list[str], per_prompt: int, seed: int) -> list[float]:
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

    from dalle_kit_plugins.data.shapes import COLOURS

    bright = (image.float().amax(0) > 0.5 * max(COLOURS[colour])).numpy()
    labels, n = ndimage.label(bright, structure=np.ones((3, 3)))
    sizes = ndimage.sum(bright, labels, range(1, n + 1)) if n else []
    regions = [size for size in sizes if size >= 6]
    return len(regions) == 1 and 25 <= max(regions) <= 0.4 * bright.size


def short_prompt_objects(draw, per_prompt: int, seed: int) -> tuple[float, int, int]:
    """(fraction of draws with one solid object, prompts with at least 7 of 8 such draws, prompts) over the colour +
    shape captions."""
    from dalle_kit_plugins.data.shapes import COLOURS, SHAPES

    prompts = [(f"a {c} {s}", c) for c in COLOURS for s in SHAPES]
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        images = draw([p for p, _ in prompts for _ in range(per_prompt)], g)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    right = [one_solid_object(images[i], prompts[i // per_prompt][1]) for i in range(len(images))]
    per = [sum(right[i * per_prompt : (i + 1) * per_prompt]) for i in range(len(prompts))]
    return sum(right) / len(right), sum(k >= 7 * per_prompt / 8 for k in per), len(prompts)


def short_prompt_modes(draw, probe, test, per_prompt: int, seed: int) -> tuple[float, float]:
    """(mean, over the 18 colour + shape captions, of the (size, position) modes the probe reads among
    5 x `per_prompt` draws; the same for as many test images matching each caption, drawn with replacement)."""
    from dalle_kit_plugins.data.shapes import ATTRIBUTES, COLOURS, SHAPES

    n = 5 * per_prompt
    prompts = [(f"a {c} {s}", c, s) for c in COLOURS for s in SHAPES]
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        images = draw([p for p, _, _ in prompts for _ in range(n)], g)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    real, attrs = [], test.attributes
    for _, c, s in prompts:
        match = (attrs["colour"] == ATTRIBUTES["colour"].index(c)) & (attrs["shape"] == ATTRIBUTES["shape"].index(s))
        idx = match.nonzero().flatten()
        real.append(test.images[idx[torch.randint(len(idx), (n,), generator=g)]])

    def covered(batch: torch.Tensor) -> float:
        read = probe.predict(batch)
        modes = [
            {(int(a), int(b)) for a, b in zip(read["size"][i : i + n], read["position"][i : i + n])}
            for i in range(0, len(batch), n)
        ]
        return sum(map(len, modes)) / len(modes)

    return covered(images), covered(torch.cat(real))


def noise_share(run, parts: dict[str, torch.nn.Module], captions: list[str]) -> float | None:
    """First-layer noise share of a dcgan generator in `parts` (the run's modules to draw with; see the module
    doc); None for other generators."""
    if run.recipe.pipeline.info.name != "gan":
        return None
    generator, encoder = parts["generator"], parts["text_encoder"]
    first = getattr(generator, "net", [None])[0]
    if not isinstance(first, torch.nn.ConvTranspose2d) or not hasattr(generator, "text_proj"):
        return None
    weight = first.weight.detach().float().flatten(2)  # [in, out, k*k]
    w_z, w_t = weight[: generator.latent_dim], weight[generator.latent_dim :]
    var_z = w_z.square().sum(0)  # z ~ N(0, I): the variance of each output
    with torch.inference_mode():
        text = generator.text_proj(encoder(captions)).float()  # [N, text_embed]
    var_t = torch.einsum("nc,cok->nok", text, w_t).var(0)
    return float(var_z.sum() / (var_z.sum() + var_t.sum()))


def mean(values: list[float], digits: int) -> str:
    return f"{sum(values) / len(values):.{digits}f}" if values else "-"


def diversity_table(
    runs, registry, extra_prompts: int, per_prompt: int, seed: int, modes: bool = True
) -> tuple[Table | None, str]:
    """The second table (see the module doc) over the runs on the shapes data, and its protocol; None without one.
    ``modes=False`` leaves out the modes a probe reads (the probe trains once per machine, then is cached)."""
    from dalle_kit.run import Run
    from dalle_kit.tools.evaluate import evaluation_of
    from dalle_kit.trainer import Trainer

    from dalle_kit_plugins.data.shapes import parse_caption
    from dalle_kit_plugins.metrics.text_alignment import PROBE_VERSION, TextAlignment

    opened = [Run.open(d, registry, quiet=True) for d in runs]
    shapes = [(d, run) for d, run in zip(runs, opened) if run.recipe.parts["data"].info.name == "shapes"]
    if not shapes:
        return None, ""
    first = shapes[0][1].parts.dataset().load("test")
    limit = min(500, len(first.images))
    real_ok = [one_solid_object(first.images[i], parse_caption(first.captions[i])["colour"]) for i in range(limit)]
    probe, probe_info = None, {}
    if modes:
        # the metric's own probe: refused, as the metric refuses it, below its held-out accuracy floor
        probe, probe_info = TextAlignment(TextAlignment.Config()).probe(
            evaluation_of(shapes[0][1], num_samples=1, seed=seed)
        )
    table = Table(
        "Diversity within a prompt and one solid object per short prompt, by sampling",
        [
            "run",
            "steps",
            "mode_seeking",
            "sampling",
            "pixel diversity generated",
            "real",
            "generated / real",
            "first-layer noise share",
            "one solid object (real: %.3f)" % (sum(real_ok) / len(real_ok)),
            "prompts at 7 of 8",
            "modes read, generated",
            "modes read, real",
        ],
    )
    counted = set()
    for d, run in shapes:
        test = run.parts.dataset().load("test")
        g = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(test.captions), generator=g)[:extra_prompts].tolist()
        prompts = list(run.recipe.sample.prompts) + [test.captions[i] for i in picked]
        real = [real_spread(test, p) for p in prompts]
        restored = Trainer.restore(run, run.recipe.pipeline.info.cls(run.recipe.train))  # once for both uses
        share = noise_share(run, restored.drawing_modules, test.captions)  # first: before drawing sets eval modes
        draw = restored.sampler()
        gen = generated_spread(draw, prompts, per_prompt, seed)
        kept = [i for i, r in enumerate(real) if r == r]  # prompts that at least two test images match
        counted.add(len(kept))
        fraction, good, total = short_prompt_objects(draw, per_prompt, seed)
        read = short_prompt_modes(draw, probe, test, per_prompt, seed) if probe is not None else None
        steps = [r["step"] for r in run.files.read_metrics() if r["kind"] == "train"]
        table.add(
            "/".join(str(d).rstrip("/").split("/")[-2:]),
            steps[-1] if steps else "-",
            getattr(run.recipe.train, "mode_seeking", "-"),
            run.recipe.pipeline.info.cls(run.recipe.train).sampling() or "plain draws",
            mean([gen[i] for i in kept], 4),
            mean([real[i] for i in kept], 4),
            mean([gen[i] / real[i] for i in kept], 3),
            "-" if share is None else f"{share:.3f}",
            f"{fraction:.3f}",
            f"{good} of {total}",
            "-" if read is None else f"{read[0]:.1f} of 10",
            "-" if read is None else f"{read[1]:.1f} of 10",
        )
    protocol = (
        f"pixel diversity: mean pairwise L1 (pixels in 0..1) among {per_prompt} draws per prompt, "
        f"{'/'.join(map(str, sorted(counted)))} prompts (the recipe's [sample] prompts, then {extra_prompts} test "
        f"captions drawn with seed {seed}; those that at least two test images match); real: the same among the "
        f"run's test images matching each caption; one solid object: the 18 colour + shape prompts, {per_prompt} "
        f"draws each, seed {seed}, the header's real fraction over {limit} test images"
    )
    if probe is not None:
        accuracy = probe_info["test_accuracy"]
        protocol += (
            f"; modes read: for the same 18 prompts, {5 * per_prompt} draws each (seed {seed}), the number of the 10 "
            f"(size, position) modes that the text-alignment probe (probe-cnn v{PROBE_VERSION}, "
            f"test accuracy size {accuracy['size']:.3f}, position {accuracy['position']:.3f}) reads among them, "
            f"averaged over the prompts; real: as many test images matching each prompt, drawn with replacement"
        )
    return table, protocol


def earlier_runs(recipe: str, registry, runs_dir: str) -> list[str]:
    """Overrides pointing a recipe's earlier runs (``[train] codec_run``, ``clip_run``: ``runs/NAME``) into
    `runs_dir`, where this script trained them just before."""
    from dalle_kit.recipe import load_recipe

    train = load_recipe(recipe, registry).train
    return [
        f'train.{key}="{Path(runs_dir) / Path(getattr(train, key)).name}"'
        for key in ("codec_run", "clip_run")
        if getattr(train, key, "")
    ]


def metric_names(args, dataset: str) -> list[str]:
    """--metrics, else the dataset's defaults, plus the CLIP metrics when --clip names a CLIP."""
    names = args.metrics or DEFAULT_METRICS.get(dataset, ["fid", "kid"])
    return names + [m for m in CLIP_METRICS if args.clip and not args.metrics and m not in names]


def clip_settings(run, args) -> dict:
    """The run's own [eval.<metric>] settings, with --clip as the CLIP of clip-score and r-precision and, with
    --candidates, one K for r-precision in every row (--expected: its expectation over every draw of distractors)."""
    settings = dict(run.recipe.metric_settings)
    if args.clip:
        import attrs

        registry = run.registry
        for name in CLIP_METRICS:
            cls = registry.parts["metric"][name].cls
            base = settings.get(name) or cls.Config()
            settings[name] = attrs.evolve(base, pretrained=str(Path(args.clip).resolve()))
        if args.candidates:
            settings["r-precision"] = attrs.evolve(settings["r-precision"], candidates=args.candidates)
        if args.expected:
            settings["r-precision"] = attrs.evolve(settings["r-precision"], expected=True)
    return settings


def own_judge_warning(results: dict) -> str:
    """A note for the scores cell when a CLIP metric's judge is the CLIP the images were drawn with (its protocol
    says so): such a run can satisfy its judge without matching the caption."""
    from dalle_kit_plugins.clip.score import OWN_JUDGE

    judged = [name for name, result in results.items() if OWN_JUDGE in result.protocol.extractor]
    return f" [{', '.join(judged)} judged by {OWN_JUDGE}]" if judged else ""


def trained_parameters(run) -> int:
    """Parameters of the modules the run trained (its EMA copies and frozen earlier runs not counted)."""
    import dalle_kit

    pipeline = run.recipe.pipeline.info.cls(run.recipe.train)
    modules = dalle_kit.Trainer.restore(run, pipeline).training.modules
    return sum(p.numel() for name, m in modules.items() if not name.endswith("_ema") for p in m.parameters())


def scores_table(runs, registry, args, settings_grid, prompts: list[str], per_prompt: int) -> tuple[Table, str]:
    """The first table (see the module doc) and its protocol."""
    from dalle_kit.evaluation import Evaluation
    from dalle_kit.tools.evaluate import build_metrics, compute_metrics, evaluation_of
    from dalle_kit.run import Run
    from dalle_kit.trainer import sampler

    table = Table(
        "Scores, one protocol",
        [
            "recipe",
            "steps trained",
            "train time",
            "sampling",
            "sampling vs first row",
            "parameters",
            "scores",
            "published best FID, same loss",
        ],
    )
    protocols: dict[str, None] = {}
    first_rate = None
    for run_dir in runs:
        run = Run.open(run_dir, registry, quiet=True)
        dataset = run.recipe.parts["data"].info.name
        names = metric_names(args, dataset)
        settings = clip_settings(run, args)
        train = [r for r in run.files.read_metrics() if r["kind"] == "train"]
        parameters = trained_parameters(run)
        shown = prompts if dataset == "shapes" else list(run.recipe.sample.prompts) or prompts
        grid: list[dict[str, Any]] = [{}]
        if run.recipe.pipeline.info.name == "diffusion":
            own = {"sample_steps": run.recipe.train.sample_steps, "guidance_scale": run.recipe.train.guidance_scale}
            grid = [own] if args.diffusion_settings == "own" else settings_grid
        for setting in grid:
            draw = sampler(run, **setting)
            per_image = seconds_per_image(draw, shown, per_prompt)
            first_rate = first_rate or per_image
            evaluation = evaluation_of(run, num_samples=args.num_samples, seed=args.seed, metric_names=names, draw=draw)
            metrics = build_metrics(names, registry, settings=settings)
            results = compute_metrics(evaluation, metrics)
            protocols.update({f"{name}: {result.protocol.line()}": None for name, result in results.items()})
            label = run.recipe.name + (
                f", {setting['sample_steps']} steps, guidance {setting['guidance_scale']:g}" if setting else ""
            )
            table.add(
                label,
                train[-1]["step"] if train else "-",
                f"{train[-1]['time'] / 60:.1f} min" if train else "-",
                f"{per_image * 1000:.1f} ms/image",
                f"{per_image / first_rate:.2f}x",
                f"{parameters / 1e6:.2f}M",
                scores(results) + own_judge_warning(results),
                published(dataset, run),
            )
    if args.calibrate and runs:
        run = Run.open(runs[0], registry, quiet=True)
        data = run.parts.dataset()
        real = data.load("train")
        names = metric_names(args, run.recipe.parts["data"].info.name)
        n = args.num_samples
        evaluation = Evaluation(
            data,
            num_samples=n,
            seed=args.seed,
            metric_names=names,
            generated=real.images[:n],
            prompts=list(real.captions[:n]),
        )
        metrics = build_metrics(names, registry, settings=clip_settings(run, args))
        results = compute_metrics(evaluation, metrics)
        table.add("real train images in the place of generated ones", "-", "-", "-", "-", "-", scores(results), "-")
    protocol = (
        f"scores: {args.num_samples} generated images a row, prompts drawn with seed {args.seed} from the test "
        f"captions, against the first {args.num_samples} test images; sampling: {per_prompt} draws of each of "
        f"the {len(prompts)} shapes prompts (off shapes: of the recipe's [sample] prompts) in one batch after a warm-up batch; "
        "parameters: those the "
        "run trained (frozen parts of earlier runs, a codec or a CLIP, not counted); train time: the run's "
        "training clock. Protocols: " + " | ".join(protocols)
    )
    return table, protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=None, help="recipes to train (default: the shapes families)")
    parser.add_argument("--runs", nargs="*", default=[], help="finished runs to score as they are")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every recipe trained here",
    )
    parser.add_argument("--runs-dir", default="runs", help="where the recipes train")
    parser.add_argument("-n", "--num-samples", type=int, default=1000)
    parser.add_argument("--metrics", nargs="*", default=None, help="default: per dataset (DEFAULT_METRICS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clip", default="", metavar="RUN", help="a clip-pretrain run: add clip-score and r-precision judged by it"
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=0,
        metavar="K",
        help="with --clip: r-precision ranks among K captions in every row (default: each run's own setting)",
    )
    parser.add_argument(
        "--expected",
        action="store_true",
        help="with --clip: r-precision as its expectation over every draw of distractors, not one seeded draw",
    )
    parser.add_argument("--calibrate", action="store_true", help="add real train images scored as if generated")
    parser.add_argument(
        "--tables", nargs="+", choices=["scores", "diversity"], default=["scores", "diversity"], help="which tables"
    )
    parser.add_argument("--prompts", type=int, default=50, help="diversity: test captions beside the [sample] prompts")
    parser.add_argument("--per-prompt", type=int, default=8, help="diversity: images drawn per prompt")
    parser.add_argument(
        "--diffusion-settings",
        choices=["grid", "own"],
        default="grid",
        help="score a diffusion run at each of DIFFUSION_SETTINGS (grid) or at its recipe's own sampling settings",
    )
    add_arguments(parser)
    args = parser.parse_args()
    from dalle_kit import api
    from dalle_kit.registry import get_registry

    if args.recipes is None and not args.runs:
        args.recipes = FAMILIES
    settings_grid, prompts, per_prompt, extra = DIFFUSION_SETTINGS, PROMPTS, 8, {}
    tmp = None
    if args.smoke:  # a few steps of each on a small train split, few images, KID only (no probe, no 2048-d eigvals)
        tmp = tempfile.TemporaryDirectory(prefix="families-")
        args.runs_dir, args.num_samples, args.metrics, prompts, per_prompt = tmp.name, 4, ["kid"], PROMPTS[:2], 1
        args.calibrate = True
        torch.set_num_threads(1)  # on a busy machine: no threads spinning against it
        args.overrides += [
            "train.threads=1",
            "train.steps=2",
            "train.batch_size=4",
            "data.train_size=64",
            "data.test_size=200",  # enough for the diversity table's real images to match its prompts
            "eval.metrics=[]",
            "sample.every=0",
            'sample.prompts=["a red circle"]',
            "sample.per_prompt=1",
        ]
        settings_grid, extra = (
            [{"sample_steps": 2, "guidance_scale": 3.0}],
            {
                "shapes-diffusion": ["train.sample_steps=2"],
                "shapes-unclip": ["train.sample_steps=2", "train.prior_steps=2"],
            },
        )
        args.prompts, args.per_prompt = 4, 2
    registry = get_registry()
    runs = []
    for name in args.recipes or []:
        earlier = earlier_runs(name, registry, args.runs_dir)
        trained = api.train(
            name,
            [*args.overrides, *extra.get(name, []), *earlier],
            runs_dir=args.runs_dir,
            quiet=True,
            registry=registry,
        )
        if trained.recipe.pipeline.info.cls.draws_images:  # a CLIP or a codec is trained for the runs after it
            runs.append(trained.dir)
    runs += [Path(r) for r in args.runs]

    tables, protocols = [], []
    if "scores" in args.tables:
        table, protocol = scores_table(runs, registry, args, settings_grid, prompts, per_prompt)
        tables.append(table)
        protocols.append(protocol)
    if "diversity" in args.tables:
        table, protocol = diversity_table(
            runs, registry, args.prompts, args.per_prompt, args.seed, modes=not args.smoke
        )
        if table is not None:
            tables.append(table)
            protocols.append(protocol)
    emit("families", "; ".join(protocols), tables, record=args.record, smoke=args.smoke)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
