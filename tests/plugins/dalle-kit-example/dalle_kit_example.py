"""A third-party dalle-kit plugin: an MLP generator, registered through the `dalle_kit` entry point."""

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan


class MLPGenerator(gan.Generator):
    """A two-layer perceptron from (noise, text) to pixels."""

    name = "mlp"

    @attrs.frozen
    class Config:
        latent_dim: int = param(32, "size of the noise vector")
        hidden: int = param(256, "hidden units", validator=attrs.validators.gt(0))

    def __init__(self, config, *, text_dim, image_size, channels):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + text_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, channels * image_size * image_size),
            nn.Tanh(),
        )

    def forward(self, z, text):
        out = self.net(torch.cat([z, text], dim=1))
        return out.view(len(z), self.channels, self.image_size, self.image_size)


@dalle_kit.hookimpl
def register_generators(register):
    register(MLPGenerator)
