"""Two shortcuts in the Inception forward: the same features in less time on CPU (the resize bit for bit, the
fused convolution to float rounding).

- **The TF1 resize, done separably.** torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` (the resize
  to 299x299 that makes its features match TensorFlow's) gathers four full 299x299 images per input and blends
  them. The blend along x only ever reads the input's own rows, so `tf1_resize` blends each source row once
  (32 rows for a 32x32 image, instead of 2 x 299) and then blends those rows along y: the same operations on the
  same values in the same order, so the result is identical (tests/test_metrics_fidelity.py checks it against
  torch-fidelity's function for up- and down-sampling, both corner modes), in less time;
  `forward_with_resize` gives torch-fidelity's own forward with only that function swapped.
- **Convolution and ReLU as one oneDNN call.** Once the batch norms are folded in, each ``BasicConv2d`` is a
  convolution with a bias followed by a ReLU; `fuse_conv_relu` runs the pair as oneDNN's convolution with a ReLU
  post-op (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch.compile's CPU backend emits), which saves
  one pass over every activation. The ReLU is applied to fp32 sums of the same products, but oneDNN may add them
  in another order for the fused call (it does at one thread, on inputs larger than the probe's), so features
  agree with the unfused network to float rounding, bit for bit only where the order is the same. The fusion is
  made only after a probe has found it equal to the unfused block on a small input, and only fp32 inputs on CPU
  take it (anything else, bf16 autocast included, runs the block as before).

What they save: benchmarks/results/eval-throughput.md.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch

#: The name torch-fidelity's InceptionV3 forward calls its resize by.
RESIZE_NAME = "interpolate_bilinear_2d_like_tensorflow1x"


def _grid(n_in: int, n_out: int, align_corners: bool, dtype: torch.dtype, device: torch.device):
    """torch-fidelity's source coordinates for one axis: lower index, upper index, fraction (its exact arithmetic)."""
    scale = (n_in - 1) / max(1, n_out - 1) if align_corners else n_in / n_out
    coordinate = torch.arange(0, n_out, 1, dtype=dtype, device=device) * torch.tensor(scale, dtype=torch.float32)
    lower = coordinate.long()
    upper = (lower + 1).clamp_max(n_in - 1)
    return lower, upper, coordinate - lower.float()


def tf1_resize(input: torch.Tensor, size, align_corners: bool = False, **_) -> torch.Tensor:
    """torch-fidelity's TF1-compatible bilinear resize of [N, C, H, W] floats to `size`, blended one axis at a time.

    Per output pixel torch-fidelity computes ``top = a + (b - a) * dx``, ``bottom = c + (d - c) * dx`` and
    ``top + (bottom - top) * dy``, where top and bottom blend two pixels of one input row; here each input row is
    blended once and the rows are then picked and blended along y: identical values."""
    if input.dim() != 4 or not torch.is_floating_point(input):
        raise ValueError(f"expected a 4-D floating point tensor, got {input.dtype} {tuple(input.shape)}")
    y_lower, y_upper, dy = _grid(input.shape[2], size[0], align_corners, input.dtype, input.device)
    x_lower, x_upper, dx = _grid(input.shape[3], size[1], align_corners, input.dtype, input.device)
    left = input.index_select(3, x_lower)
    rows = input.index_select(3, x_upper).sub_(left).mul_(dx).add_(left)
    top = rows.index_select(2, y_lower)
    return rows.index_select(2, y_upper).sub_(top).mul_(dy.view(-1, 1)).add_(top)


#: The name torch-fidelity's forward calls its input checks by, and the words of its uint8-only check.
CHECK_NAME, UINT8_CHECK = "vassert", "dtype=torch.uint8"


def forward_with_resize(forward: Callable, float_input: bool = False) -> Callable:
    """`forward` (torch-fidelity's InceptionV3 forward) calling `tf1_resize` instead of its own resize.

    The function is rebuilt from the same code with that one name bound differently, so every later change to
    torch-fidelity's forward is followed. If the forward no longer calls the resize by that name, it is returned
    as it is. With `float_input`, its uint8-only input check also lets float32 images in [0, 255] through: the
    forward converts its input to float32 before anything else, so a uint8 image and its float values give the same
    features, and unrounded images (Lucic et al.'s protocol) can be scored."""
    if RESIZE_NAME not in forward.__code__.co_names:
        return forward
    names = {RESIZE_NAME: tf1_resize}
    if float_input and CHECK_NAME in forward.__code__.co_names:
        names[CHECK_NAME] = _allowing_float(forward.__globals__[CHECK_NAME])
    scope = dict(forward.__globals__, **names)
    rebuilt = types.FunctionType(forward.__code__, scope, forward.__name__, forward.__defaults__, forward.__closure__)
    rebuilt.__doc__, rebuilt.__qualname__ = forward.__doc__, forward.__qualname__
    return rebuilt


def _allowing_float(check: Callable) -> Callable:
    """torch-fidelity's `vassert`, except that its uint8-only input check passes (the caller feeds float32 [0, 255])."""

    def vassert(truth, message):
        if not truth and UINT8_CHECK in message:
            return
        check(truth, message)

    return vassert


def _pointwise_convolution():
    """oneDNN's fused convolution op, or None where this torch has none."""
    try:
        return torch.ops.mkldnn._convolution_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def fuse_conv_relu(net: torch.nn.Module, block_type: type) -> int:
    """Run each folded `block_type` (conv with bias, Identity batch norm, ReLU) as one fused oneDNN call in fp32 on
    CPU. Returns how many blocks were fused (0 where the op is missing or the probe found a difference)."""
    op = _pointwise_convolution()
    blocks = [
        b
        for b in net.modules()
        if isinstance(b, block_type)
        and isinstance(b.bn, torch.nn.Identity)
        and b.conv.bias is not None
        and isinstance(b.conv.padding, tuple)
    ]
    if op is None or not blocks or not _probe(op, blocks[0]):
        return 0
    for block in blocks:
        block.forward = _fused_forward(op, block)
    return len(blocks)


def _fused_forward(op, block: torch.nn.Module) -> Callable:
    conv, plain = block.conv, block.forward
    padding, stride, dilation = list(conv.padding), list(conv.stride), list(conv.dilation)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return plain(x)
        return op(x, conv.weight, conv.bias, padding, stride, dilation, conv.groups, "relu", [None], "")

    return forward


def _probe(op, block: torch.nn.Module) -> bool:
    """Whether the fused call gives exactly the block's own output on a small channels_last input."""
    conv = block.conv
    if conv.weight.device.type != "cpu" or conv.weight.dtype != torch.float32:
        return False
    x = torch.randn(2, conv.in_channels, 11, 11, generator=torch.Generator().manual_seed(0)).to(
        memory_format=torch.channels_last
    )
    try:
        with torch.inference_mode():
            fused = op(
                x,
                conv.weight,
                conv.bias,
                list(conv.padding),
                list(conv.stride),
                list(conv.dilation),
                conv.groups,
                "relu",
                [None],
                "",
            )
            return torch.equal(fused, block(x))
    except (RuntimeError, TypeError):
        return False
