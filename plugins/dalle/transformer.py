"""DALL-E's stage 2 model: a decoder-only transformer over caption tokens followed by image tokens.

Captions are split by a real BPE tokenizer, open_clip's ``SimpleTokenizer`` (CLIP's byte-level BPE, shipped with
open-clip-torch, nothing downloaded). A run keeps only the BPE tokens its training captions use (`CaptionTokens`:
ids re-numbered, plus a padding and an unknown token), so the embedding and the output layer stay small; the list
is saved with the run. A caption becomes ``text_len`` ids (cut, or padded with the padding token).

`TokenTransformer` embeds one sequence of ``text_len`` caption ids then ``image_len`` image ids (image id ``k`` is
token ``text_vocab + k``: one shared table), adds a learned position embedding and runs pre-norm transformer blocks
under a causal mask: position ``i`` predicts token ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

PAD, UNKNOWN = "<pad>", "<unk>"


def bpe():
    """open_clip's CLIP BPE tokenizer (its vocabulary file ships inside the package)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class CaptionTokens:
    """The BPE tokens a run's training captions use, re-numbered 0..n-1 after the padding (0) and unknown (1) tokens."""

    def __init__(self, pieces: Sequence[int]):
        self.pieces = list(pieces)  # BPE ids, in the order of their new ids (from 2)
        self.index = {piece: i + 2 for i, piece in enumerate(self.pieces)}
        self._bpe = bpe()

    @classmethod
    def fit(cls, captions: Sequence[str]) -> CaptionTokens:
        tokenizer = bpe()
        seen: dict[int, None] = {}
        for caption in dict.fromkeys(captions):
            for piece in tokenizer.encode(caption):
                seen.setdefault(piece, None)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(self.pieces) + 2

    def ids(self, captions: Sequence[str], length: int) -> Tensor:
        """[len(captions), length] int64: each caption's tokens, cut to `length` or padded with 0."""
        out = torch.zeros(len(captions), length, dtype=torch.int64)
        for row, caption in enumerate(captions):
            tokens = [self.index.get(p, 1) for p in self._bpe.encode(caption)][:length]
            out[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        return out

    def unknown_words(self, captions: Sequence[str]) -> list[str]:
        """The words of `captions` with a BPE piece the run never saw."""
        words = []
        for caption in captions:
            for word in caption.split():
                if any(p not in self.index for p in self._bpe.encode(word)) and word not in words:
                    words.append(word)
        return words


class TokenTransformer(nn.Module):
    """Causal transformer over [caption ids (text_len), image ids (image_len)] with one shared embedding table."""

    def __init__(
        self, text_vocab: int, image_vocab: int, text_len: int, image_len: int, width: int, depth: int, heads: int
    ):
        super().__init__()
        self.text_vocab, self.image_vocab = text_vocab, image_vocab
        self.text_len, self.image_len = text_len, image_len
        length = text_len + image_len
        self.embed = nn.Embedding(text_vocab + image_vocab, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, text_vocab + image_vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, n] (n <= text_len + image_len, image ids already offset by text_vocab) -> logits [B, n, V]."""
        n = tokens.shape[1]
        h = self.embed(tokens) + self.position[:n]
        h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))

    def sequence(self, text: Tensor, image: Tensor) -> Tensor:
        """One token sequence from caption ids [B, text_len] and image ids [B, image_len]."""
        return torch.cat([text, image + self.text_vocab], dim=1)

    @torch.no_grad()
    def sample(self, text: Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int = 0) -> Tensor:
        """Image ids [B, image_len] drawn token by token after the captions `text`, from the image part of the
        vocabulary only, at `temperature`, from the `top_k` most likely (0: all)."""
        tokens = text
        for _ in range(self.image_len):
            logits = self(tokens)[:, -1, self.text_vocab :].float() / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[1]), dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = logits.softmax(dim=1)
            choice = torch.multinomial(probs.cpu(), 1, generator=generator).to(tokens.device)
            tokens = torch.cat([tokens, choice + self.text_vocab], dim=1)
        return tokens[:, self.text_len :] - self.text_vocab
