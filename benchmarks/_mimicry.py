"""torch-mimicry's DCGAN at 32x32 and its training step, written out with torch only (a contestant of
train_throughput.py; not a benchmark itself).

torch-mimicry (PyPI 0.1.16) does not import with current torch, so its network is rebuilt here layer for layer from
``torch_mimicry/nets/dcgan/dcgan_32.py`` and ``torch_mimicry/modules/resblocks.py`` (github.com/kwotsin/mimicry):

- generator: Linear(128 -> 4*4*256), three residual GBlocks 256 -> 256 that upsample x2 bilinearly (BatchNorm, ReLU,
  3x3 convolutions, a learnt 1x1 shortcut), BatchNorm, ReLU, 3x3 convolution to 3 channels, tanh;
- discriminator: DBlockOptimized 3 -> 128 (downsample), DBlock 128 -> 128 (downsample), two DBlocks 128 -> 128,
  ReLU, sum over space, Linear(128 -> 1); no spectral norm (mimicry's DCGAN sets it off);
- the step of its Trainer with ``n_dis = 1``: D on real images and on detached fresh fakes, BCE
  (``minimax_loss_dis``), Adam; then G on another fresh draw of noise against D with -log sigmoid
  (``ns_loss_gen``), Adam (lr 2e-4, betas (0.0, 0.9) as its examples use).

It is unconditional (no text), so it measures what a wider residual network of the same image size achieves per
FLOP on this machine beside dalle-kit's DCGAN, not the same work.

``python benchmarks/_mimicry.py --against DIR`` checks these classes against torch-mimicry's own (same parameters,
outputs and input gradients with the same weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _xavier(conv: nn.Module, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(conv.weight.data, gain)
    return conv


class GBlock(nn.Module):
    """Residual generator block: BN, ReLU, (upsample), conv3x3, BN, ReLU, conv3x3, plus a learnt 1x1 shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.c1 = _xavier(nn.Conv2d(channels, channels, 3, 1, 1), math.sqrt(2.0))
        self.c2 = _xavier(nn.Conv2d(channels, channels, 3, 1, 1), math.sqrt(2.0))
        self.c_sc = _xavier(nn.Conv2d(channels, channels, 1, 1, 0), 1.0)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.c_sc(self._up(x))


class DBlock(nn.Module):
    """Residual discriminator block: ReLU, conv3x3, ReLU, conv3x3, (avg-pool); 1x1 shortcut where the shape changes.

    mimicry's first ReLU is in place (``nn.ReLU(True)`` on the block's input), and its residual branch runs before
    the shortcut, so the shortcut sees the rectified input too: done the same way here."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = _xavier(nn.Conv2d(in_channels, in_channels, 3, 1, 1), math.sqrt(2.0))
        self.c2 = _xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2.0))
        learnable = in_channels != out_channels or downsample
        self.c_sc = _xavier(nn.Conv2d(in_channels, out_channels, 1, 1, 0), 1.0) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        h = self.c2(F.relu(self.c1(x)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.c_sc is None:
            return h + x
        shortcut = self.c_sc(x)
        return h + (F.avg_pool2d(shortcut, 2) if self.downsample else shortcut)


class DBlockOptimized(nn.Module):
    """The first discriminator block: conv3x3, ReLU, conv3x3, avg-pool; shortcut avg-pool then 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.c1 = _xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2.0))
        self.c2 = _xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2.0))
        self.c_sc = _xavier(nn.Conv2d(in_channels, out_channels, 1, 1, 0), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2) + self.c_sc(F.avg_pool2d(x, 2))


class Generator32(nn.Module):
    def __init__(self, nz: int = 128, ngf: int = 256, bottom_width: int = 4):
        super().__init__()
        self.nz, self.ngf, self.bottom_width = nz, ngf, bottom_width
        self.l1 = _xavier(nn.Linear(nz, bottom_width**2 * ngf), 1.0)
        self.blocks = nn.Sequential(GBlock(ngf), GBlock(ngf), GBlock(ngf))
        self.b5 = nn.BatchNorm2d(ngf)
        self.c5 = _xavier(nn.Conv2d(ngf, 3, 3, 1, 1), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(len(z), self.ngf, self.bottom_width, self.bottom_width)
        return torch.tanh(self.c5(F.relu(self.b5(self.blocks(h)))))


class Discriminator32(nn.Module):
    def __init__(self, ndf: int = 128):
        super().__init__()
        self.blocks = nn.Sequential(
            DBlockOptimized(3, ndf), DBlock(ndf, ndf, True), DBlock(ndf, ndf, False), DBlock(ndf, ndf, False)
        )
        self.l5 = _xavier(nn.Linear(ndf, 1), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l5(F.relu(self.blocks(x)).sum(dim=(2, 3)))


def mimicry_step(images: torch.Tensor, batch: int, seed: int = 0, ngf: int = 256, ndf: int = 128):
    """A step function over ``images`` (uint8, N x 3 x 32 x 32): mimicry's D step then G step at ``batch``
    (``ngf``/``ndf``: mimicry's widths unless a smoke run narrows them)."""
    torch.manual_seed(seed)
    G, D = Generator32(ngf=ngf), Discriminator32(ndf=ndf)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9))
    data_rng = torch.Generator().manual_seed(seed + 1)
    noise_rng = torch.Generator().manual_seed(seed + 2)
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)  # minimax_loss_dis's labels
    bce = F.binary_cross_entropy_with_logits

    def step() -> dict[str, float]:
        idx = torch.randint(len(images), (batch,), generator=data_rng)
        real = images[idx].float().div(127.5).sub(1.0)
        opt_d.zero_grad(set_to_none=True)
        output_real = D(real)
        fake = G(torch.randn(batch, G.nz, generator=noise_rng)).detach()
        d_loss = bce(output_real, ones) + bce(D(fake), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        g_loss = -torch.log(
            torch.sigmoid(D(G(torch.randn(batch, G.nz, generator=noise_rng)))) + 1e-8
        ).mean()  # ns_loss_gen
        g_loss.backward()  # D's gradients from here are cleared by its next zero_grad, as in mimicry
        opt_g.step()
        return {"loss_d": d_loss.item(), "loss_g": g_loss.item()}

    return step


def check_against(source: str) -> str:
    """Compare with torch-mimicry's own classes, imported from its unpacked sdist at ``source`` (only its network
    modules: its package ``__init__`` pulls in code that no longer imports): same parameters, outputs and gradients."""
    import re
    import sys
    import types

    package = types.ModuleType("torch_mimicry")
    package.__path__ = [f"{source}/torch_mimicry"]
    sys.modules["torch_mimicry"] = package
    from torch_mimicry.nets.dcgan.dcgan_32 import DCGANDiscriminator32, DCGANGenerator32

    torch.manual_seed(0)
    lines = []
    for theirs, ours, first, shape in (
        (DCGANGenerator32(), Generator32(), 2, (8, 128)),
        (DCGANDiscriminator32(), Discriminator32(), 1, (8, 3, 32, 32)),
    ):
        state = {
            re.sub(r"^block(\d)\.", lambda m: f"blocks.{int(m.group(1)) - first}.", k): v
            for k, v in theirs.state_dict().items()
        }
        ours.load_state_dict(state, strict=True)
        x = torch.randn(shape)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = theirs(a), ours(b)
        out_a.sum().backward()
        out_b.sum().backward()
        lines.append(
            f"{type(theirs).__name__}: {sum(p.numel() for p in ours.parameters())} parameters; max |output "
            f"diff| {(out_a - out_b).abs().max().item():.3g}, max |input-gradient diff| "
            f"{(a.grad - b.grad).abs().max().item():.3g}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Check the networks here against torch-mimicry's own classes.")
    parser.add_argument(
        "--against",
        required=True,
        metavar="DIR",
        help="torch-mimicry 0.1.16 unpacked (pip download torch-mimicry==0.1.16 --no-deps; tar xzf)",
    )
    print(check_against(parser.parse_args().against))
