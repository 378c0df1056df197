"""The ``dvae_codec`` part ``vq-dvae``: a vector-quantised tokenizer (VQ-VAE, van den Oord et al. 2017).

The encoder (the same convolutions as ``gumbel-dvae``'s) gives an ``embed_dim`` vector at every position of the token
grid; its token is the nearest of ``codebook_size`` codebook vectors (squared Euclidean distance). Decoding looks
the ids up and runs the decoder. Training (`relaxed`) passes the quantised vectors to the decoder with the
straight-through estimator (the decoder's gradient is copied to the encoder's output) and returns two terms, added
to the pipeline's reconstruction loss: ``codebook`` (the codebook vectors pulled to the encoder outputs they were
chosen for) and ``commit`` (``commitment`` times the outputs pulled to their codes). ``temperature`` is unused.

A codebook trained only by its loss leaves most entries unused (they are never nearest, so never move). `maintain`,
which the `dvae` pipeline calls before every training pass, sets the codebook on the first call to encoder outputs of
that batch picked at random (a one-step k-means++-free initialisation) and afterwards replaces every entry whose
running usage (an exponential average of its share of the batch's tokens, ``usage_decay``) has fallen below
``dead_below`` times the uniform share with an encoder output of the batch picked at random: dead-code
re-initialisation (as in Dhariwal et al. 2020's Jukebox and in vector-quantize-pytorch). Its randomness comes from the
generator it is given, and the usage is a buffer saved with the weights, so a resumed run does what an
uninterrupted one would.
"""

from __future__ import annotations


import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins.dalle.codec import DVAECodec
from dalle_kit_plugins.dalle.convnets import CoderConfig, build_coder

_gt0 = attrs.validators.gt(0)


class VQDVAE(DVAECodec):
    """VQ-VAE tokenizer: conv encoder, nearest-codebook quantisation (straight-through), conv decoder, dead-code
    re-initialisation."""

    name = "vq-dvae"

    @attrs.frozen
    class Config(CoderConfig):
        cosine: bool = param(
            True,
            "l2-normalise the encoder's outputs and the codebook vectors (nearest by angle; ViT-VQGAN, Yu et al. "
            "2022): the outputs cannot outgrow the codes, and more codes stay in use",
        )
        commitment: float = param(
            0.25, "weight of the commitment term (VQ-VAE's beta)", validator=attrs.validators.ge(0)
        )
        usage_decay: float = param(
            0.99,
            "decay of each code's running share of the tokens",
            validator=[attrs.validators.ge(0), attrs.validators.lt(1)],
        )
        dead_below: float = param(
            0.03,
            "re-initialise a code whose running share falls below this fraction of 1 / codebook_size (0: never)",
            validator=attrs.validators.ge(0),
        )

    def __init__(self, config, *, image_size: int, channels: int):
        super().__init__(config, image_size=image_size, channels=channels)
        build_coder(self, config, image_size, channels, codes_out=config.embed_dim)
        nn.init.uniform_(self.codebook.weight, -1 / config.codebook_size, 1 / config.codebook_size)
        self.register_buffer("usage", torch.zeros(config.codebook_size))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def vectors(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's outputs as rows: [B * h * w, embed_dim] (unit length with ``cosine``)."""
        z = self.encoder(images)
        rows = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return nn.functional.normalize(rows, dim=1) if self.config.cosine else rows

    def codes(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The codebook vectors of `ids` (all of them by default), unit length with ``cosine``."""
        weight = self.codebook.weight if ids is None else self.codebook(ids)
        return nn.functional.normalize(weight, dim=-1) if self.config.cosine else weight

    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """The index of the nearest codebook vector to each row."""
        weight = self.codes()
        distance = rows.square().sum(1, keepdim=True) - 2 * rows @ weight.t() + weight.square().sum(1)
        return distance.argmin(1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        return self.nearest(self.vectors(images)).view(b, *self.grid)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codes(ids).permute(0, 3, 1, 2))

    def relaxed(self, images, *, temperature, generator=None):
        b = images.shape[0]
        rows = self.vectors(images)
        ids = self.nearest(rows.detach())
        chosen = self.codes(ids)
        codebook = (chosen - rows.detach()).square().mean()
        commit = (rows - chosen.detach()).square().mean()
        straight = rows + (chosen - rows).detach()  # forward: the codes; backward: the identity to the encoder
        grid = straight.view(b, *self.grid, -1).permute(0, 3, 1, 2)
        return self.decoder(grid), {"codebook": codebook, "commit": self.config.commitment * commit}

    @torch.no_grad()
    def maintain(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
        rows = self.vectors(images)
        k = self.vocab_size

        def pick(n: int) -> torch.Tensor:
            return rows[torch.randint(len(rows), (n,), generator=generator).to(rows.device)]

        if not bool(self.initialised):
            self.codebook.weight.copy_(pick(k))
            self.usage.fill_(1 / k)
            self.initialised.fill_(True)
            return
        share = torch.bincount(self.nearest(rows), minlength=k).float() / len(rows)
        self.usage.mul_(self.config.usage_decay).add_(share.to(self.usage), alpha=1 - self.config.usage_decay)
        dead = (self.usage < self.config.dead_below / k).nonzero().flatten()
        if len(dead):
            self.codebook.weight[dead] = pick(len(dead))
            self.usage[dead] = 1 / k


@dalle_kit.hookimpl
def register_parts(register):
    register(VQDVAE)
