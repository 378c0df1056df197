"""Text encoder `bow`: a trainable bag-of-words encoder whose vocabulary is fitted on the training captions."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins.text.vocab import FittedVocabulary, Vocabulary


class BagOfWords(FittedVocabulary, dalle_kit.TextEncoder):
    """Mean of learned word embeddings, then an MLP and a LayerNorm; vocabulary fitted on the dataset's captions
    (words in any script, case-folded: `dalle_kit_plugins.text.vocab.tokenize`)."""

    name = "bow"

    @attrs.frozen
    class Config:
        dim: int = param(128, "size of the caption vector", validator=attrs.validators.gt(0))
        embed_dim: int = param(64, "size of each word embedding", validator=attrs.validators.gt(0))
        max_vocab: int = param(20000, "keep at most this many most frequent words", validator=attrs.validators.gt(0))
        min_count: int = param(1, "drop words seen fewer times than this", validator=attrs.validators.ge(1))
        trainable: bool = param(True, "train the embeddings with the discriminator (false: frozen random features)")

    def __init__(self, config):
        super().__init__(config)
        self.dim = config.dim
        self.vocab: Vocabulary | None = None
        self.embedding: nn.EmbeddingBag | None = None
        # The closing LayerNorm keeps the vectors at unit scale: an encoder trained with the discriminator
        # could otherwise grow them until they drown the generator's noise input (seen as mode collapse).
        self.proj = nn.Sequential(
            nn.Linear(config.embed_dim, config.dim),
            nn.LeakyReLU(0.2),
            nn.Linear(config.dim, config.dim),
            nn.LayerNorm(config.dim, elementwise_affine=False),
        )
        self.proj.requires_grad_(config.trainable)

    def _build(self, vocab: Vocabulary) -> None:
        device = self.proj[0].weight.device
        self.vocab = vocab
        self.embedding = nn.EmbeddingBag(len(vocab), self.config.embed_dim, mode="mean").to(device)
        self.embedding.requires_grad_(self.config.trainable)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        if self.embedding is None:
            raise RuntimeError("bow text encoder used before fit(captions) or loading a vocabulary")
        ids = [self.vocab.ids(c) for c in captions]
        device = self.embedding.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor(
            [0, *torch.tensor([len(r) for r in ids[:-1]]).cumsum(0).tolist()], dtype=torch.long, device=device
        )
        return self.proj(self.embedding(flat, offsets))


@dalle_kit.hookimpl
def register_text_encoders(register):
    register(BagOfWords)
