"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the discriminator sees.

Translation, colour (brightness, saturation, contrast) and cutout, as in the authors' reference
implementation (github.com/mit-han-lab/data-efficient-gans), with the random draws taken from a
given `torch.Generator` so that training stays deterministic and resumable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(shape, rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=rng).to(like.device, like.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    n = len(x)
    x = x + (_rand((n, 1, 1, 1), rng, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((n, 1, 1, 1), rng, x) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand((n, 1, 1, 1), rng, x) + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), generator=rng).to(x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), generator=rng).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: Sequence[str], rng: torch.Generator) -> torch.Tensor:
    """Apply each policy in order (the same for real and generated images, so gradients reach the generator)."""
    for policy in policies:
        x = _FUNCTIONS[policy](x, rng)
    return x
