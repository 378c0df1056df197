"""Generator and discriminator `dcgan` (Radford et al. 2016), conditioned on a text vector.

The generator concatenates the noise with a learned projection of the text vector (as in
GAN-INT-CLS, Reed et al. 2016). The discriminator adds a projection term (Miyato & Koyama 2018):
logit = head(h) + <W t, h>, with h the flattened last feature map, so the text can speak to
both what is drawn and where.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan


def _levels(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 1:
        raise ValueError(f"dcgan needs a power-of-two image size >= 8, got {image_size}")
    return n


def _init(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) weights, N(1, 0.02) batch-norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(gan.Generator):
    """DCGAN generator: (noise, projected text) -> transposed convolutions -> tanh."""

    name = "dcgan"
    conditioning_layers = ("text_proj",)

    @attrs.frozen
    class Config:
        latent_dim: int = param(100, "size of the noise vector z", validator=attrs.validators.gt(0))
        ngf: int = param(
            64, "channels of the last hidden layer (doubling towards the input)", validator=attrs.validators.gt(0)
        )
        text_embed: int = param(
            64, "the text vector is projected to this size before concatenation", validator=attrs.validators.gt(0)
        )
        latent_codes: int = param(
            0,
            "a categorical code beside the Gaussian noise: z ends with a one-hot of one of this "
            "many values, drawn uniformly (training does not tie a code to a size or place by itself); "
            "0: Gaussian noise only",
            validator=attrs.validators.ge(0),
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim + config.latent_codes
        levels = _levels(image_size)
        width = config.ngf * 2 ** (levels - 1)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, config.text_embed), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.latent_dim + config.text_embed, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(levels - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init(self)

    def sample_latent(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Gaussian noise [n, latent_dim], followed by a one-hot code [n, latent_codes] when the config asks for one."""
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        codes = self.config.latent_codes
        if codes:
            z = torch.cat([z, nn.functional.one_hot(torch.randint(codes, (n,), generator=generator), codes).float()], 1)
        return z.to(device or "cpu")

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.text_proj(text)], dim=1)
        return self.net(h[:, :, None, None])


class DCGANDiscriminator(gan.Discriminator):
    """DCGAN discriminator with projection conditioning on the text vector."""

    name = "dcgan"
    conditioning_layers = ("embed",)

    @attrs.frozen
    class Config:
        ndf: int = param(64, "channels of the first layer (doubling with depth)", validator=attrs.validators.gt(0))
        norm: Literal["spectral", "batch", "none"] = param(
            "spectral",
            "normalisation of the layers: spectral norm (Miyato et al. 2018, as StudioGAN's DCGAN), batch norm (Radford et al.) or none",
        )
        minibatch_std: bool = param(
            False,
            "append the batch's feature standard deviation before the head (Karras et al. 2018), against mode collapse",
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        levels = _levels(image_size)
        width = config.ndf
        sn = spectral_norm if config.norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for _ in range(levels - 1):
            layers += [sn(nn.Conv2d(width, width * 2, 4, 2, 1, bias=config.norm != "batch"))]
            if config.norm == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Conv2d(width + int(config.minibatch_std), 1, 4, 1, 0))
        self.embed = sn(nn.Linear(text_dim, width * 16, bias=False))
        if config.norm != "spectral":
            _init(self)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        head_in = h
        if self.config.minibatch_std:
            spread = h.std(dim=0, unbiased=False).mean() if len(h) > 1 else h.new_zeros(())
            head_in = torch.cat([h, spread.expand(len(h), 1, *h.shape[2:])], dim=1)
        unconditional = self.head(head_in).flatten(1).squeeze(1)
        projection = (self.embed(text) * h.flatten(1)).sum(dim=1)
        return unconditional + projection


@dalle_kit.hookimpl
def register_generators(register):
    register(DCGANGenerator)


@dalle_kit.hookimpl
def register_discriminators(register):
    register(DCGANDiscriminator)
