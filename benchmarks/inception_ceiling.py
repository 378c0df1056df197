"""How fast can the Inception pass of FID/KID/PR go on this CPU in fp32? The pass against the CPU's own best fp32 rate.

    .venv/bin/python benchmarks/inception_ceiling.py [--images 64] [--rounds 4] [--batch 16]
                                                     [--before-seconds 1039.1 --other-seconds 33.8] [--onnxruntime]

Issue 13 asks for a 10,000-image evaluation 2x faster end to end than the path of aa431d9, with FID within 0.1%
of the fp32 value. Nearly all of that evaluation is one Inception pass over the generated images (834 of 868 s on
this project's AVX2 EPYC, 447 of 465 s on the Intel VM: benchmarks/results/eval-throughput.md), and its work is
fixed: torch-fidelity's InceptionV3 at 299x299, whatever the images. This script measures, in one run:

- the pass's FLOPs per image (``torch.utils.flop_counter.FlopCounterMode`` on torch-fidelity's extractor: its
  convolutions, 2 FLOPs a multiply-add);
- the CPU's best fp32 rate, measured: square fp32 matrix products (n = 2048 and 4096) through torch (MKL/oneDNN)
  and through numpy's BLAS (OpenBLAS), best of both; and the nominal peak (cores x 2 FMA x lanes x 2 x clock from
  /proc/cpuinfo: an upper bound, turbo aside);
- img/s of the toolkit's extractor (fp32: folded batch norms, channels_last, fused convolution + ReLU) and of
  torch-fidelity's stock extractor with the same weights, interleaved in rounds over the same random 28x28 images
  (the cost does not depend on the pixels), and their GFLOP/s as a share of the measured best;
- with ``--onnxruntime`` (``pip install onnxruntime onnx``; not a dependency of dalle-kit): the same network
  exported to ONNX and run by ONNX Runtime's CPU kernels (MLAS) after the same resize, as a second opinion on how
  near the ceiling torch is, with the largest feature difference to the toolkit's;
- the ceiling: the least time n images can take at the measured best rate, and the best end-to-end ratio any fp32
  implementation could reach against ``--before-seconds`` when the other phases (generation, the statistics) take
  ``--other-seconds`` (defaults: this project's AVX2 EPYC, eval-throughput.md, 2026-12-04: before 1039.1 s,
  after 868.0 s of which 834.2 s Inception).

A matrix product is the friendliest work a CPU has (the convolutions of the pass are im2col/direct kernels on
the same FMA units), so the measured best rate is an optimistic bound: what cannot be done at that rate cannot
be done in fp32 at all, short of doing less arithmetic (which changes the features).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hand_loop import cpu_model, peak_gflops  # noqa: E402

from dalle_kit.threads import usable_cpus  # noqa: E402

#: The network after torch-fidelity's resize and normalisation, in its forward's order.
TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
         "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
         "Mixed_7b", "Mixed_7c", "AvgPool")


def gemm_rates(threads: int) -> dict[str, float]:
    """Best GFLOP/s of fp32 square matrix products through torch and through numpy's BLAS (n = 2048, 4096)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rates: dict[str, float] = {}
    blas = next((i["internal_api"] for i in threadpool_info() if i["user_api"] == "blas"), "blas")
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        na, nb = a.numpy(), b.numpy()
        with threadpool_limits(threads, user_api="blas"):
            for name, product in (("torch.mm", lambda: a @ b), (f"numpy ({blas})", lambda: na @ nb)):
                product()
                best = min(_seconds(product) for _ in range(3))
                rates[name] = max(rates.get(name, 0.0), 2 * n**3 / best / 1e9)
    return rates


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Trunk(torch.nn.Module):
    """torch-fidelity's InceptionV3 from the resized, normalised 299x299 input to the 2048-d pool features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        for name in TRUNK:
            x = getattr(self.net, name)(x)
        return torch.flatten(x, 1)


def onnxruntime_extractor(net: torch.nn.Module, threads: int, path: Path):
    """The toolkit's resize in torch, then `net` (a stock extractor, its batch norms folded here as the toolkit's
    are) exported to ONNX and run by ONNX Runtime (fp32)."""
    import warnings

    import onnxruntime

    from dalle_kit_plugins import inception, inception_kernels

    inception.fold_batch_norms(net)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Trunk(net).eval(), (torch.zeros(2, 3, 299, 299),), str(path), input_names=["x"],
                          output_names=["features"], dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                          dynamo=False, opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def extract(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = (inception_kernels.tf1_resize(images.float(), (299, 299)) - 128) / 128
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])

    return extract, f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images per contestant per round")
    parser.add_argument("--batch", type=int, default=16, help="images per extractor call (the metrics' default)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-n", type=int, default=10_000, help="the evaluation's size, for the ceiling")
    parser.add_argument("--before-seconds", type=float, default=1039.1, help="the 'before' evaluation's total")
    parser.add_argument("--other-seconds", type=float, default=33.8, help="the evaluation's phases besides the pass")
    parser.add_argument("--onnxruntime", action="store_true", help="add ONNX Runtime on the same network")
    args = parser.parse_args()

    threads = usable_cpus()
    torch.set_num_threads(threads)
    from dalle_kit_plugins import inception
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    extractor = inception.resolve()
    toolkit = inception.build(extractor, ["2048"]).eval()
    def stock_extractor():
        return FeatureExtractorInceptionV3("stock", ["2048"], feature_extractor_weights_path=_stock_weights()).eval()

    stock = stock_extractor()
    contestants = {"dalle-kit extractor (fp32)": lambda x: toolkit(x)[0],
                   "torch-fidelity stock extractor": lambda x: stock(x)[0]}
    notes = {}
    if args.onnxruntime:
        import tempfile

        folder = tempfile.mkdtemp(prefix="inception-onnx-")
        extract, notes["onnxruntime"] = onnxruntime_extractor(stock_extractor(), threads, Path(folder) / "inception.onnx")
        contestants["onnxruntime, same network"] = extract

    images = torch.randint(0, 256, (args.images, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = images.split(args.batch)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        stock(images[:1])
    gflop = counter.get_total_flops() / 1e9

    with torch.inference_mode():
        reference = torch.cat([contestants["dalle-kit extractor (fp32)"](b) for b in batches])
        differences = {name: (torch.cat([f(b) for b in batches]) - reference).abs().max().item()
                       for name, f in contestants.items()}  # also each contestant's warm-up
        rates: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(args.rounds):
            for name, f in contestants.items():
                seconds = _seconds(lambda: [f(b) for b in batches])
                rates[name].append(len(images) / seconds)
    gemm = gemm_rates(threads)
    best_name, best = max(gemm.items(), key=lambda kv: kv[1])
    nominal, nominal_how = peak_gflops(threads)

    print(f"Machine: {cpu_model()}, {threads} threads, torch {torch.__version__}")
    print(f"Inception pass: {gflop:.2f} GFLOP an image ({extractor.label}; torch-fidelity InceptionV3, 299x299)")
    print(f"fp32 rate, nominal: {nominal:.0f} GFLOP/s ({nominal_how})")
    for name, rate in gemm.items():
        print(f"fp32 rate, measured matrix product through {name}: {rate:.0f} GFLOP/s")
    print(f"\n{args.rounds} interleaved rounds of {len(images)} images (batch {args.batch}), median:")
    print(f"{'contestant':34s} {'img/s':>7s} {'GFLOP/s':>8s} {'of best':>8s} {'max |feature diff|':>19s}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:34s} {rate:7.2f} {rate * gflop:8.1f} {rate * gflop / best:8.0%} {differences[name]:19.2e}")
    for text in notes.values():
        print(f"  ({text})")
    floor = args.n * gflop / best
    print(f"\nCeiling: {args.n} images at the measured best {best:.0f} GFLOP/s ({best_name}) take at least {floor:.0f} s;")
    print(f"with {args.other_seconds:.1f} s of other phases the best end-to-end ratio in fp32 against "
          f"{args.before_seconds:.1f} s is {args.before_seconds / (floor + args.other_seconds):.2f}x; "
          f"2x would need {args.n * gflop / (args.before_seconds / 2 - args.other_seconds):.0f} GFLOP/s from the pass.")


def _stock_weights():
    """fid-helper's weights as a file torch-fidelity's own extractor reads (an in-memory file)."""
    import io

    from dalle_kit_plugins import inception

    buffer = io.BytesIO()
    torch.save(inception.fid_helper_standard_state(), buffer)
    buffer.seek(0)
    return buffer


if __name__ == "__main__":
    main()
