"""A word vocabulary fitted on captions, for text encoders that learn their own embeddings."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import dalle_kit
from dalle_kit import hints

SPECIALS = ("<pad>", "<unk>")
PAD, UNK = 0, 1
#: How captions are cut into words; saved with each vocabulary, so a run keeps the tokenizer it was trained with.
#: 1: runs of ASCII ``a-z 0-9 '`` (a non-ASCII letter split a word: "côte" -> "c", "te"); 2: words in any script,
#: each CJK ideograph a word of its own (as BERT's basic tokenizer splits them: those scripts write no spaces).
TOKENIZER = 2
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
_WORDS = {
    1: re.compile(r"[a-z0-9']+"),
    2: re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*"),
}
_QUOTES = str.maketrans({"\u2019": "'", "\u02bc": "'"})  # the typographic apostrophes


def tokenize(text: str, tokenizer: int = TOKENIZER) -> list[str]:
    """Lower-case words: 'A red circle!' -> ['a', 'red', 'circle']; 'Côte d’Ivoire' -> ['côte', "d'ivoire"];
    '红色的圆' -> ['红', '色', '的', '圆'] (`tokenizer` 2, compatibility-normalised and case-folded; 1 is the ASCII-only
    one of earlier runs)."""
    if tokenizer == 1:
        return _WORDS[1].findall(text.lower())
    return _WORDS[2].findall(unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold())


class Vocabulary:
    """Words by frequency after the specials <pad> (0) and <unk> (1), and the `tokenizer` that cut them; JSON-able
    through `words` and `tokenizer`."""

    def __init__(self, words: Sequence[str], tokenizer: int = TOKENIZER):
        if tokenizer not in _WORDS:  # a vocabulary saved by a newer dalle-kit
            raise dalle_kit.UserError(
                f"a vocabulary cut by tokenizer {tokenizer!r}, which this dalle-kit does not have (it has "
                f"{', '.join(map(str, sorted(_WORDS)))}); upgrade dalle-kit: {hints.upgrade()}"
            )
        self.words = list(words)
        self.tokenizer = tokenizer
        self.index = {w: i for i, w in enumerate(self.words)}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def fit(cls, captions: Iterable[str], max_size: int = 20000, min_count: int = 1) -> Vocabulary:
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept[:max_size]])

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, text: str) -> list[int]:
        """Token ids of `text` (unknown words -> <unk>; an empty caption -> [<unk>])."""
        ids = self._cache.get(text)
        if ids is None:
            ids = [self.index.get(w, UNK) for w in tokenize(text, self.tokenizer)] or [UNK]
            if len(self._cache) < 100_000:
                self._cache[text] = ids
        return ids


class FittedVocabulary:
    """Mixin for text encoders that learn a vocabulary from the training captions.

    The encoder implements ``_build(vocab)`` (make the embedding for that vocabulary) and has
    ``config.max_vocab`` (and optionally ``config.min_count``); the mixin fits the vocabulary and
    saves and restores it with the checkpoint's JSON state.
    """

    vocab: Vocabulary | None = None

    def fit(self, captions: Sequence[str]) -> None:
        self._build(Vocabulary.fit(captions, self.config.max_vocab, getattr(self.config, "min_count", 1)))

    def _build(self, vocab: Vocabulary) -> None:
        raise NotImplementedError

    def extra_state_json(self) -> dict:
        if self.vocab is None:
            return {"vocab": []}
        return {"vocab": self.vocab.words, "tokenizer": self.vocab.tokenizer}

    def load_extra_state_json(self, state: dict) -> None:
        self._build(Vocabulary(state["vocab"], state.get("tokenizer", 1)))  # saved before tokenizers had numbers: 1

    @classmethod
    def unknown_words(cls, saved: dict | None, prompts: Iterable[str]) -> list[str]:
        """The words of `prompts` missing from the vocabulary saved as ``{"vocab": [words]}`` (`extra_state_json`),
        in order of appearance; [] when `saved` holds no vocabulary."""
        words = (saved or {}).get("vocab") if isinstance(saved, dict) else None
        if not words:
            return []
        known, tokenizer = set(words), saved.get("tokenizer", 1) if isinstance(saved, dict) else 1
        if tokenizer not in _WORDS:
            return []
        return list(dict.fromkeys(w for p in prompts for w in tokenize(p, tokenizer) if w not in known))
