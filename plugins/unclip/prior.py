"""The kind ``embedding_prior`` and its part ``mlp-prior``: DALL-E 2's prior (Ramesh et al. 2022), which turns a CLIP
text embedding into a CLIP image embedding by denoising diffusion in the embedding space.

DALL-E 2's diffusion prior is a decoder-only transformer over the caption's tokens, its text embedding, the
timestep and the noised image embedding, predicting the clean image embedding. ``mlp-prior`` keeps the objective
and the inputs that fit one vector each (text embedding, timestep, noised image embedding) and replaces the
transformer by a residual MLP: with one token per input there is nothing for attention to mix.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins.diffusion.pipeline import check_conditioned_prediction


class EmbeddingPrior(nn.Module, dalle_kit.Part):
    """Predicts the clean image embedding: ``forward(noisy[B, D], timesteps[B] (long), text[B, D]) -> [B, D]``.
    Built as ``cls(config, dim=)`` (D, the CLIP embedding size)."""

    kind = "embedding_prior"
    build_context = ("dim",)

    def __init__(self, config, *, dim: int):
        super().__init__()
        self.config, self.dim = config, dim


def check_prior(cls, config=None, **_):
    """Output shaped like the input embedding, finite, and changed by the text embedding."""
    torch.manual_seed(0)
    model = cls(config or cls.Config(), dim=16).eval()
    check_conditioned_prediction(cls, model, torch.randn(2, 16), "a prior", "the text embedding")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The transformer's sinusoidal position code of each timestep: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    code = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(code, (0, dim - 2 * half))  # an odd dim: one zero column


class MLPPrior(EmbeddingPrior):
    """Residual MLP on [noisy image embedding, text embedding, timestep code], pre-LayerNorm blocks."""

    name = "mlp-prior"

    @attrs.frozen
    class Config:
        width: int = param(512, "hidden width", validator=attrs.validators.gt(0))
        depth: int = param(4, "residual blocks", validator=attrs.validators.gt(0))
        dropout: float = param(0.0, "dropout in each block", validator=[attrs.validators.ge(0), attrs.validators.lt(1)])

    def __init__(self, config, *, dim: int):
        super().__init__(config, dim=dim)
        w = config.width
        self.inp = nn.Linear(3 * dim, w)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.SiLU(), nn.Dropout(config.dropout), nn.Linear(2 * w, w)
            )
            for _ in range(config.depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim))

    def forward(self, noisy, timesteps, text):
        h = self.inp(torch.cat([noisy, text, timestep_embedding(timesteps, self.dim)], dim=1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


@dalle_kit.hookimpl
def register_kinds(register):
    register(EmbeddingPrior, checks=[check_prior])


@dalle_kit.hookimpl
def register_parts(register):
    register(MLPPrior)
