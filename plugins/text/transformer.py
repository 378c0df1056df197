"""Text encoder `transformer`: a small trainable Transformer over a vocabulary fitted on the captions
(seed 003's Transformer text encoder)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins.text.vocab import PAD, FittedVocabulary, Vocabulary


class TransformerText(FittedVocabulary, dalle_kit.TextEncoder):
    """Pre-norm Transformer encoder over word tokens (words in any script, case-folded, as `bow` cuts them),
    mean-pooled, projected and layer-normalised."""

    name = "transformer"

    @attrs.frozen
    class Config:
        dim: int = param(128, "size of the caption vector", validator=attrs.validators.gt(0))
        width: int = param(64, "model width (token embedding size)", validator=attrs.validators.gt(0))
        layers: int = param(2, "Transformer layers", validator=attrs.validators.gt(0))
        heads: int = param(4, "attention heads (must divide width)", validator=attrs.validators.gt(0))
        max_len: int = param(32, "captions are cut to this many tokens", validator=attrs.validators.gt(0))
        max_vocab: int = param(20000, "keep at most this many most frequent words", validator=attrs.validators.gt(0))
        dropout: float = param(0.0, "dropout inside the Transformer layers", validator=attrs.validators.ge(0))

    def __init__(self, config):
        super().__init__(config)
        if config.width % config.heads:
            raise dalle_kit.UserError(f"transformer: heads ({config.heads}) must divide width ({config.width})")
        self.dim = config.dim
        self.vocab: Vocabulary | None = None
        self.tokens: nn.Embedding | None = None
        self.positions = nn.Parameter(torch.randn(config.max_len, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, 4 * config.width, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(
            nn.LayerNorm(config.width),
            nn.Linear(config.width, config.dim),
            nn.LayerNorm(config.dim, elementwise_affine=False),
        )

    def _build(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.tokens = nn.Embedding(len(vocab), self.config.width, padding_idx=PAD).to(
            self.positions.device, self.positions.dtype
        )
        nn.init.normal_(self.tokens.weight, std=0.02)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        if self.tokens is None:
            raise RuntimeError("transformer text encoder used before fit(captions) or loading a vocabulary")
        rows = [self.vocab.ids(c)[: self.config.max_len] for c in captions]
        length = max(len(r) for r in rows)
        ids = torch.tensor([r + [PAD] * (length - len(r)) for r in rows], device=self.positions.device)
        pad = ids == PAD
        h = self.tokens(ids) + self.positions[:length]
        h = self.encoder(h, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1)
        return self.out(pooled)


@dalle_kit.hookimpl
def register_text_encoders(register):
    register(TransformerText)
