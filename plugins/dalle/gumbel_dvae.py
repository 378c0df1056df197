"""The ``dvae_codec`` part ``gumbel-dvae``: DALL-E's discrete VAE with the Gumbel-softmax relaxation.

The encoder (stride-2 convolutions down by ``downsample``, residual blocks) gives, at every position of the token
grid, logits over a codebook of ``codebook_size`` learned embeddings. Encoding takes their argmax; decoding looks
the ids up in the codebook and runs the decoder (residual blocks, transposed convolutions back up, tanh). Training
(`relaxed`) replaces the argmax by a sample of the Gumbel-softmax (concrete) relaxation, ``softmax((logits + g) / tau)``
with Gumbel noise g, and decodes the resulting mixture of codebook embeddings (Jang et al. 2017, Maddison et al.
2017), as DALL-E's dVAE does; the pipeline anneals tau towards 1/16. The term ``kl`` is the KL of the categorical
posterior softmax(logits) to the uniform prior over the codebook, in nats per token.

Why this and not a VQ codebook (vector-quantize-pytorch): it is DALL-E's own method, with the temperature and KL
schedules the paper describes, and it is short; its noise is drawn from the generator it is given (the run's
stream: torch's own ``gumbel_softmax`` draws from the global RNG), whereas that library's dead-code re-seeding and
k-means initialisation draw from the global RNG and its EMA codebook changes inside a training forward pass, and it
would add four packages (einops, einx, loguru, torch-einops-utils).
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins.dalle.codec import DVAECodec

_gt0 = attrs.validators.gt(0)


def _power_of_two(instance, attribute, value):
    if value < 2 or value & (value - 1):
        raise dalle_kit.Invalid(
            attribute.name, f"{attribute.name} = {value} is not a power of two >= 2", "use 2, 4, 8, ..."
        )


class ResBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))) at constant width."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class GumbelDVAE(DVAECodec):
    """DALL-E's dVAE: conv encoder to per-position codebook logits, Gumbel-softmax relaxation, conv decoder."""

    name = "gumbel-dvae"

    @attrs.frozen
    class Config:
        codebook_size: int = param(512, "K: the number of codebook embeddings (distinct tokens)", validator=_gt0)
        embed_dim: int = param(64, "size of each codebook embedding", validator=_gt0)
        downsample: int = param(
            4, "image side / token grid side (a power of two): 4 gives 8x8 tokens at 32 px", validator=_power_of_two
        )
        width: int = param(64, "channels of the encoder's and decoder's convolutions", validator=_gt0)
        res_blocks: int = param(
            2,
            "residual blocks at the token grid's resolution, in the encoder and in the decoder",
            validator=attrs.validators.ge(0),
        )

    def __init__(self, config, *, image_size: int, channels: int):
        super().__init__(config, image_size=image_size, channels=channels)
        if image_size % config.downsample or image_size < config.downsample:
            raise dalle_kit.UserError(
                f"[codec] downsample = {config.downsample} does not divide [data] size = {image_size}; use a "
                "power of two that divides it (the token grid is size / downsample a side)"
            )
        side = image_size // config.downsample
        self.grid = (side, side)
        self.vocab_size = config.codebook_size
        halvings = int(math.log2(config.downsample))
        w = config.width
        down: list[nn.Module] = [nn.Conv2d(channels, w, 3, padding=1)]
        for _ in range(halvings):
            down += [nn.ReLU(), nn.Conv2d(w, w, 4, stride=2, padding=1)]
        down += [ResBlock(w) for _ in range(config.res_blocks)]
        self.encoder = nn.Sequential(*down, nn.ReLU(), nn.Conv2d(w, config.codebook_size, 1))
        self.codebook = nn.Embedding(config.codebook_size, config.embed_dim)
        up: list[nn.Module] = [nn.Conv2d(config.embed_dim, w, 1)]
        up += [ResBlock(w) for _ in range(config.res_blocks)]
        for _ in range(halvings):
            up += [nn.ReLU(), nn.ConvTranspose2d(w, w, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*up, nn.ReLU(), nn.Conv2d(w, channels, 3, padding=1), nn.Tanh())

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """[B, K, h, w] codebook logits."""
        return self.encoder(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(dim=1)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codebook(ids).permute(0, 3, 1, 2))

    def relaxed(self, images, *, temperature, generator=None):
        logits = self.logits(images)
        tiny = torch.finfo(torch.float32).tiny
        u = torch.rand(logits.shape, generator=generator).clamp_min(tiny)  # in (0, 1): -log(u) > 0
        gumbel = (-(-u.log()).log()).to(logits)
        soft = ((logits + gumbel) / temperature).softmax(dim=1)
        embedded = torch.einsum("bkhw,kd->bdhw", soft, self.codebook.weight)
        log_q = logits.log_softmax(dim=1)
        kl = (log_q.exp() * log_q).sum(dim=1).mean() + math.log(self.vocab_size)
        return self.decoder(embedded), {"kl": kl}


@dalle_kit.hookimpl
def register_parts(register):
    register(GumbelDVAE)
