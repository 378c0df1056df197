"""Generator `resnet` and discriminator `resnet-sn`: the SNGAN residual networks (Miyato et al. 2018),
conditioned on the text vector.

The generator's residual blocks use text-conditioned batch norm: BatchNorm without affine, then a
per-channel scale and shift predicted from the text vector (conditional BN as in SNGAN/BigGAN), or,
with ``conditioning = "affine"``, DF-GAN's affine modulation (Tao et al. 2022): no normalisation,
scale and shift from a two-layer MLP of the text vector. The discriminator is spectrally normalised with projection
conditioning over globally sum-pooled features.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan


def _modulation(text_dim: int, channels: int, mlp: bool) -> nn.Module:
    """Text -> per-channel values, zero at the start (the identity modulation): a Linear, or DF-GAN's Linear-ReLU-Linear."""
    last = nn.Linear(text_dim, channels)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(text_dim, text_dim), nn.ReLU(), last) if mlp else last


class TextBatchNorm(nn.Module):
    """BatchNorm2d whose scale and shift are functions of the text vector (``affine``: DF-GAN's, without the norm)."""

    def __init__(self, channels: int, text_dim: int, affine: bool = False):
        super().__init__()
        self.norm = nn.Identity() if affine else nn.BatchNorm2d(channels, affine=False)
        self.scale, self.shift = _modulation(text_dim, channels, affine), _modulation(text_dim, channels, affine)

    def forward(self, x, text):
        gamma = 1 + self.scale(text)[:, :, None, None]
        beta = self.shift(text)[:, :, None, None]
        return self.norm(x) * gamma + beta


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, text_dim: int, affine: bool = False):
        super().__init__()
        self.bn1, self.bn2 = TextBatchNorm(c_in, text_dim, affine), TextBatchNorm(c_out, text_dim, affine)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, text):
        h = F.interpolate(F.relu(self.bn1(x, text)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), text)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class ResNetGenerator(gan.Generator):
    """SNGAN residual generator with text-conditioned batch norm (or DF-GAN affine modulation) in every block."""

    name = "resnet"
    conditioning_layers = ("text_proj", "*.scale", "*.shift")  # Sequentials: every Linear inside is conditioning

    @attrs.frozen
    class Config:
        latent_dim: int = param(128, "size of the noise vector z", validator=attrs.validators.gt(0))
        channels: int = param(128, "channels of every residual block", validator=attrs.validators.gt(0))
        text_embed: int = param(
            64, "the text vector is projected to this size before conditioning", validator=attrs.validators.gt(0)
        )
        conditioning: Literal["batchnorm", "affine"] = param(
            "batchnorm",
            "'batchnorm': conditional BN (SNGAN/BigGAN); 'affine': DF-GAN's text-predicted scale and shift, no normalisation",
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        blocks = int(math.log2(image_size)) - 2
        if 2 ** (blocks + 2) != image_size or blocks < 1:
            raise ValueError(f"resnet needs a power-of-two image size >= 8, got {image_size}")
        self.latent_dim = config.latent_dim
        ch = config.channels
        self.text_proj = nn.Sequential(nn.Linear(text_dim, config.text_embed), nn.LeakyReLU(0.2))
        cond = config.text_embed
        self.stem = nn.Linear(config.latent_dim + cond, 4 * 4 * ch)
        self.blocks = nn.ModuleList([UpBlock(ch, ch, cond, config.conditioning == "affine") for _ in range(blocks)])
        self.out_bn = nn.BatchNorm2d(ch)
        self.out = nn.Conv2d(ch, channels, 3, 1, 1)

    def forward(self, z, text):
        cond = self.text_proj(text)
        h = self.stem(torch.cat([z, cond], 1)).view(len(z), self.config.channels, 4, 4)
        for block in self.blocks:
            h = block(h, cond)
        return torch.tanh(self.out(F.relu(self.out_bn(h))))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        skip = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return h + skip


class ResNetSNDiscriminator(gan.Discriminator):
    """SNGAN residual discriminator, spectral norm throughout, projection conditioning on the text."""

    name = "resnet-sn"
    conditioning_layers = ("embed",)

    @attrs.frozen
    class Config:
        channels: int = param(128, "channels of every residual block", validator=attrs.validators.gt(0))

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        ch = config.channels
        downs = int(math.log2(image_size)) - 3  # down to 8x8 then two blocks at that resolution, as SNGAN at 32x32
        self.blocks = nn.ModuleList(
            [DownBlock(channels, ch, first=True)] + [DownBlock(ch, ch, first=False) for _ in range(max(downs - 1, 0))]
        )
        self.tail = nn.ModuleList([_PlainBlock(ch) for _ in range(2)])
        self.head = spectral_norm(nn.Linear(ch, 1))
        self.embed = spectral_norm(nn.Linear(text_dim, ch, bias=False))

    def forward(self, images, text):
        h = images
        for block in self.blocks:
            h = block(h)
        for block in self.tail:
            h = block(h)
        h = F.relu(h).sum(dim=(2, 3))
        return self.head(h).squeeze(1) + (self.embed(text) * h).sum(1)


class _PlainBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(ch, ch, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


@dalle_kit.hookimpl
def register_generators(register):
    register(ResNetGenerator)


@dalle_kit.hookimpl
def register_discriminators(register):
    register(ResNetSNDiscriminator)
