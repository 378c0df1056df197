"""Model families and recipes side by side: train (or take) runs, score every one with one protocol, in one table.

    .venv/bin/python benchmarks/families.py [--recipes shapes shapes-vae shapes-diffusion] [--runs DIR ...]
                                            [--set KEY=VALUE ...] [--runs-dir runs] [-n 1000] [--metrics NAME ...]
                                            [--calibrate] [--smoke] [--record]

Each recipe of ``--recipes`` is trained at its default length (``--set`` overrides apply to all of them) into
``--runs-dir``; each run of ``--runs`` is taken as it is. Every run is then scored the same way: n generated images
for prompts drawn (seeded) from the dataset's test captions against the first n test images, with the metrics of
``--metrics`` (default per dataset: `DEFAULT_METRICS`) and the run's own ``[eval.<metric>]`` settings, each
score printed with its protocol. A diffusion run is
scored at each of `DIFFUSION_SETTINGS` (sampling steps, guidance scale). Beside the scores: the run's training
time (its own training clock), the sampling time per image (a batch of 64 images, 8 prompts x 8, after a warm-up
batch) and its ratio to the first row's; for MNIST and Fashion-MNIST the best FID Lucic et al. (2018) published for
the same loss. ``--calibrate`` adds a row with n real train images in the place of generated ones: what a perfect
generator scores under the same protocol.

Results: benchmarks/results/families.md (the shapes families). The tables of shipped recipes that the docs cite
(shapes-recipes.md, mnist.md, fashion-mnist.md) were made by this script's predecessors with the same metrics;
``--recipes`` or ``--runs`` scores those recipes again.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import Table, add_arguments, emit

DEFAULT_METRICS = {
    "shapes": ["fid", "kid", "text-alignment"],
    "mnist": ["fid", "kid", "prc", "intra-fid", "class-accuracy", "cas"],
    "fashion-mnist": ["fid", "kid", "prc", "intra-fid", "class-accuracy", "cas"],
}
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
    parser.add_argument("--calibrate", action="store_true", help="add real train images scored as if generated")
    add_arguments(parser)
    args = parser.parse_args()
    from dalle_kit import api
    from dalle_kit.evaluation import Evaluation, build_metrics, compute_metrics
    from dalle_kit.registry import get_registry
    from dalle_kit.run import Run
    from dalle_kit.trainer import sampler

    if args.recipes is None and not args.runs:
        args.recipes = ["shapes", "shapes-vae", "shapes-diffusion"]
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
            "data.test_size=8",
            "eval.metrics=[]",
            "sample.every=0",
            'sample.prompts=["a red circle"]',
            "sample.per_prompt=1",
        ]
        settings_grid, extra = (
            [{"sample_steps": 2, "guidance_scale": 3.0}],
            {"shapes-diffusion": ["train.sample_steps=2"]},
        )
    registry = get_registry()
    runs = [
        api.train(
            name, [*args.overrides, *extra.get(name, [])], runs_dir=args.runs_dir, quiet=True, registry=registry
        ).dir
        for name in args.recipes or []
    ]
    runs += [Path(r) for r in args.runs]

    table = Table(
        "Scores, one protocol",
        [
            "recipe",
            "steps trained",
            "train time",
            "sampling",
            "sampling vs first row",
            "scores",
            "published best FID, same loss",
        ],
    )
    protocols: dict[str, None] = {}
    first_rate = None
    for run_dir in runs:
        run = Run.open(run_dir, registry, quiet=True)
        dataset = run.recipe.parts["data"].info.name
        names = args.metrics or DEFAULT_METRICS.get(dataset, ["fid", "kid"])
        train = [r for r in run.files.read_metrics() if r["kind"] == "train"]
        for setting in settings_grid if run.recipe.pipeline.info.name == "diffusion" else [{}]:
            draw = sampler(run, **setting)
            per_image = seconds_per_image(draw, prompts, per_prompt)
            first_rate = first_rate or per_image
            evaluation = Evaluation.from_run(
                run, num_samples=args.num_samples, seed=args.seed, metric_names=names, draw=draw
            )
            metrics = build_metrics(names, registry, settings=dict(run.recipe.metric_settings))
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
                scores(results),
                published(dataset, run),
            )
    if args.calibrate and runs:
        run = Run.open(runs[0], registry, quiet=True)
        data = run.parts.dataset()
        real = data.load("train")
        names = args.metrics or DEFAULT_METRICS.get(run.recipe.parts["data"].info.name, ["fid", "kid"])
        n = args.num_samples
        evaluation = Evaluation(
            data,
            num_samples=n,
            seed=args.seed,
            metric_names=names,
            generated=real.images[:n],
            prompts=list(real.captions[:n]),
        )
        metrics = build_metrics(names, registry, settings=dict(run.recipe.metric_settings))
        results = compute_metrics(evaluation, metrics)
        table.add("real train images in the place of generated ones", "-", "-", "-", "-", scores(results), "-")
    protocol = (
        f"{args.num_samples} generated images a row, prompts drawn with seed {args.seed} from the test "
        f"captions, against the first {args.num_samples} test images; sampling: {len(prompts) * per_prompt} "
        "images in one batch after a warm-up batch; train time: the run's training clock. Protocols: "
        + " | ".join(protocols)
    )
    emit("families", protocol, [table], record=args.record, smoke=args.smoke)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
