"""The convolutional encoder and decoder the dalle family's codecs share (DALL-E's dVAE in small: stride-2
convolutions down to the token grid, residual blocks there, transposed convolutions back up)."""

from __future__ import annotations

import math

import attrs
from torch import Tensor, nn

import dalle_kit
from dalle_kit import param


def power_of_two(instance, attribute, value):
    """attrs validator: a power of two >= 2."""
    if value < 2 or value & (value - 1):
        raise dalle_kit.Invalid(
            attribute.name, f"{attribute.name} = {value} is not a power of two >= 2", "use 2, 4, 8, ..."
        )


@attrs.frozen
class CoderConfig:
    """The ``[codec]`` keys of the convolutions every codec of the family shares."""

    codebook_size: int = param(
        512, "K: the number of codebook entries (distinct tokens)", validator=attrs.validators.gt(0)
    )
    embed_dim: int = param(64, "size of each codebook entry", validator=attrs.validators.gt(0))
    downsample: int = param(
        4, "image side / token grid side (a power of two): 4 gives 8x8 tokens at 32 px", validator=power_of_two
    )
    width: int = param(64, "channels of the encoder's and decoder's convolutions", validator=attrs.validators.gt(0))
    res_blocks: int = param(
        2,
        "residual blocks at the token grid's resolution, in the encoder and in the decoder",
        validator=attrs.validators.ge(0),
    )


class ResBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))) at constant width."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def token_grid(image_size: int, downsample: int) -> tuple[int, int]:
    """(h, w) of the token grid, or a one-line error naming the ``[codec]`` key when `downsample` does not divide."""
    if image_size % downsample or image_size < downsample:
        raise dalle_kit.UserError(
            f"[codec] downsample = {downsample} does not divide [data] size = {image_size}; use a power of two that "
            "divides it (the token grid is size / downsample a side)"
        )
    return (image_size // downsample,) * 2


def coder(
    channels: int, width: int, downsample: int, res_blocks: int, codes_out: int, codes_in: int
) -> tuple[nn.Sequential, nn.Sequential]:
    """(encoder: images -> [B, codes_out, h, w], decoder: [B, codes_in, h, w] -> images in [-1, 1])."""
    halvings = int(math.log2(downsample))
    down: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
    for _ in range(halvings):
        down += [nn.ReLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
    down += [ResBlock(width) for _ in range(res_blocks)]
    up: list[nn.Module] = [nn.Conv2d(codes_in, width, 1)]
    up += [ResBlock(width) for _ in range(res_blocks)]
    for _ in range(halvings):
        up += [nn.ReLU(), nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)]
    encoder = nn.Sequential(*down, nn.ReLU(), nn.Conv2d(width, codes_out, 1))
    decoder = nn.Sequential(*up, nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())
    return encoder, decoder


def build_coder(codec: nn.Module, config: CoderConfig, image_size: int, channels: int, codes_out: int) -> None:
    """Give `codec` its ``grid``, ``vocab_size``, ``encoder`` (to `codes_out` channels a position), ``decoder`` (from
    ``embed_dim``) and ``codebook`` (``codebook_size`` x ``embed_dim``)."""
    codec.grid = token_grid(image_size, config.downsample)
    codec.vocab_size = config.codebook_size
    codec.encoder, codec.decoder = coder(
        channels, config.width, config.downsample, config.res_blocks, codes_out, config.embed_dim
    )
    codec.codebook = nn.Embedding(config.codebook_size, config.embed_dim)
