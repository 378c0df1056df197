"""Generator `vae-decoder`: the decoder p(x | z, t) of a text-conditional VAE.

A conditional VAE (Sohn et al. 2015) decodes a latent z, drawn from the prior N(0, I) at sampling
time (Kingma & Welling 2014), together with the condition, here the caption vector t. This decoder
maps concat(z, projected t) through a linear layer to a 4x4 map, then doubles the resolution with
blocks of nearest upsampling, 3x3 convolution, normalisation and ReLU, and ends in a 3x3
convolution and tanh. It is a plain `Generator`, so the `gan` pipeline can train it as well.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan


def _levels(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 1:
        raise ValueError(f"vae-decoder needs a power-of-two image size >= 8, got {image_size}")
    return n


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class VAEDecoder(gan.Generator):
    """(z, projected text) -> linear -> 4x4 map -> [upsample, conv, norm, ReLU] x levels -> conv -> tanh."""

    name = "vae-decoder"
    conditioning_layers = ("text_proj",)

    @attrs.frozen
    class Config:
        latent_dim: int = param(64, "size of the latent z", validator=attrs.validators.gt(0))
        width: int = param(
            32, "channels of the last upsampling block (doubling towards the 4x4 map)", validator=attrs.validators.gt(0)
        )
        text_embed: int = param(
            64,
            "the text vector is projected to this size before concatenation with z",
            validator=attrs.validators.gt(0),
        )
        norm: Literal["batch", "group", "none"] = param(
            "batch", "normalisation after each convolution: batch norm, group norm (8 groups) or none"
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim
        levels = _levels(image_size)
        width = self._start_width = config.width * 2 ** (levels - 1)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, config.text_embed), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(config.latent_dim + config.text_embed, width * 16)
        self.start = nn.Sequential(_norm(config.norm, width), nn.ReLU(True))
        blocks: list[nn.Module] = []
        for i in range(levels):
            out = width if i == 0 else width // 2
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, out, 3, 1, 1, bias=config.norm == "none"),
                _norm(config.norm, out),
                nn.ReLU(True),
            ]
            width = out
        blocks += [nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.text_proj(text)], dim=1))
        return self.net(self.start(h.view(len(h), self._start_width, 4, 4)))


@dalle_kit.hookimpl
def register_generators(register):
    register(VAEDecoder)
