"""Generator and discriminator `infogan`: the networks of Lucic et al. 2018 ("Are GANs Created Equal?") for MNIST and
Fashion-MNIST, as google/compare_gan's first commit (the paper's code) builds them in ``gans/abstract_gan.py``.

Generator: z -> fc 1024, BN, lrelu -> fc 128 * (s/4)^2, BN, lrelu -> 4x4 stride-2 transposed convolution to 64
channels, BN, lrelu -> 4x4 stride-2 transposed convolution to the image's channels -> sigmoid. Discriminator: 4x4
stride-2 convolution to 64 channels, lrelu -> 4x4 stride-2 convolution to 128, [BN], lrelu -> fc 1024, [BN], lrelu ->
fc 1 (the logit). lrelu has slope 0.2; batch norms use TF's decay 0.999 (momentum 0.001 here) and epsilon 0.001;
weights start from N(0, 0.02) (truncated at two standard deviations for the convolutions, as TF's
``truncated_normal_initializer``), biases from 0. The discriminator's batch norms are compare_gan's
``discriminator_batchnorm`` setting. z is uniform in [-1, 1]^64 as in compare_gan.

The study trains them unconditionally; with the project's text encoders they are conditional: the generator reads
the text vector concatenated to z (GAN-INT-CLS style) and the discriminator adds a projection term on its 1024-d
feature (Miyato & Koyama 2018), logit = fc(h) + <W t, h>. With a text encoder of dimension 0 (``none``) neither
exists and the networks are exactly the study's.

The generator's sigmoid gives images in [0, 1] as the study's; the toolkit's images live in [-1, 1], so the output
is 2 * sigmoid - 1 (the same image, rescaled) and the discriminator reads [-1, 1] images.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan

#: TF's batch-norm decay 0.999 and epsilon 0.001 (compare_gan's ``ops.batch_norm``).
BN_MOMENTUM, BN_EPS = 0.001, 0.001


def _side(image_size: int) -> int:
    if image_size % 4 or image_size < 8:
        raise ValueError(f"infogan needs an image size divisible by 4 and at least 8, got {image_size}")
    return image_size // 4


def _init(module: nn.Module) -> None:
    """compare_gan's initialisers: N(0, 0.02) for linear and transposed-convolution weights, the same truncated at
    two standard deviations for convolutions, zero biases; batch norms start at scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.04, 0.04)
        elif isinstance(m, (nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


def _bn(features: int, dims: int, momentum: float = BN_MOMENTUM) -> nn.Module:
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return cls(features, eps=BN_EPS, momentum=momentum)


class InfoGANGenerator(gan.Generator):
    """The InfoGAN-style generator of Lucic et al. 2018 (compare_gan): two fc layers, two transposed convolutions."""

    name = "infogan"
    conditioning_layers = ("text_proj",)

    @attrs.frozen
    class Config:
        latent_dim: int = param(
            64, "size of the noise vector z (compare_gan: z_dim = 64)", validator=attrs.validators.gt(0)
        )
        latent: Literal["uniform", "normal"] = param(
            "uniform", "distribution of z: 'uniform' in [-1, 1] (compare_gan) or standard 'normal'"
        )
        width: int = param(
            64,
            "channels of the last hidden layer (the study's 64; the layer before has twice as many, "
            "the fc layer 16 times)",
            validator=attrs.validators.gt(0),
        )
        text_embed: int = param(
            64,
            "the text vector is projected to this size before concatenation with z "
            "(no projection when the text encoder gives no vector)",
            validator=attrs.validators.gt(0),
        )
        bn_momentum: float = param(
            BN_MOMENTUM,
            "momentum of the batch norms' running statistics, which sampling uses (the study's TF decay 0.999 is "
            "0.001: the statistics need thousands of steps to settle, and samples drawn before then ignore z; "
            "PyTorch's 0.1 settles in tens)",
            validator=[attrs.validators.gt(0), attrs.validators.le(1)],
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim
        side, w = _side(image_size), config.width
        self.text_proj = nn.Sequential(nn.Linear(text_dim, config.text_embed), nn.LeakyReLU(0.2)) if text_dim else None
        inputs = config.latent_dim + (config.text_embed if text_dim else 0)
        self.fc = nn.Sequential(
            nn.Linear(inputs, 16 * w),
            _bn(16 * w, 1, config.bn_momentum),
            nn.LeakyReLU(0.2),
            nn.Linear(16 * w, 2 * w * side * side),
            _bn(2 * w * side * side, 1, config.bn_momentum),
            nn.LeakyReLU(0.2),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            _bn(w, 2, config.bn_momentum),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )
        self._shape = (2 * w, side, side)
        _init(self)

    def sample_latent(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        if self.config.latent == "normal":
            return super().sample_latent(n, generator, device)
        return (torch.rand(n, self.latent_dim, generator=generator) * 2 - 1).to(device or "cpu")

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.text_proj(text)], dim=1) if self.text_proj is not None else z
        logits = self.net(self.fc(h).view(len(z), *self._shape))
        return torch.sigmoid(logits) * 2 - 1


class InfoGANDiscriminator(gan.Discriminator):
    """The InfoGAN-style discriminator of Lucic et al. 2018 (compare_gan): two convolutions, two fc layers."""

    name = "infogan"
    conditioning_layers = ("embed",)

    @attrs.frozen
    class Config:
        batchnorm: bool = param(
            True,
            "batch norms after the second convolution and the first fc layer "
            "(compare_gan's discriminator_batchnorm; its WGAN-GP and BEGAN defaults are false)",
        )
        spectral_norm: bool = param(
            False, "spectral normalisation of every layer (Miyato et al. 2018; not in the study)"
        )
        width: int = param(
            64,
            "channels of the first convolution (the study's 64; the second has twice as many, the fc layer 16 times)",
            validator=attrs.validators.gt(0),
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        side, w, bn = _side(image_size), config.width, config.batchnorm
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            *([_bn(2 * w, 2)] if bn else []),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * w * side * side, 16 * w),
            *([_bn(16 * w, 1)] if bn else []),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(16 * w, 1)
        self.embed = nn.Linear(text_dim, 16 * w, bias=False) if text_dim else None
        _init(self)
        if config.spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    spectral_norm(m)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        logits = self.head(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(text) * h).sum(dim=1)
        return logits


@dalle_kit.hookimpl
def register_generators(register):
    register(InfoGANGenerator)


@dalle_kit.hookimpl
def register_discriminators(register):
    register(InfoGANDiscriminator)
