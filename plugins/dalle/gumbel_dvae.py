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

import torch

import dalle_kit
from dalle_kit_plugins.dalle.codec import DVAECodec
from dalle_kit_plugins.dalle.convnets import CoderConfig, build_coder


class GumbelDVAE(DVAECodec):
    """DALL-E's dVAE: conv encoder to per-position codebook logits, Gumbel-softmax relaxation, conv decoder."""

    name = "gumbel-dvae"

    Config = CoderConfig

    def __init__(self, config, *, image_size: int, channels: int):
        super().__init__(config, image_size=image_size, channels=channels)
        build_coder(self, config, image_size, channels, codes_out=config.codebook_size)

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
