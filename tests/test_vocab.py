"""The word vocabulary of the `bow` and `transformer` text encoders: words in any script, and the tokenizer a run
was trained with kept with its vocabulary, so an earlier run reads its prompts as it did."""

from __future__ import annotations

import pytest

from dalle_kit import UserError
from dalle_kit_plugins.text.vocab import TOKENIZER, UNK, FittedVocabulary, Vocabulary, tokenize


@pytest.mark.parametrize(
    "text, words",
    [
        ("A red circle!", ["a", "red", "circle"]),
        ("côte d’ivoire flag", ["côte", "d'ivoire", "flag"]),  # a typographic apostrophe is the ASCII one
        ("rescue worker’s helmet", ["rescue", "worker's", "helmet"]),
        ("São Tomé & Príncipe", ["são", "tomé", "príncipe"]),
        ("'quoted' dog's", ["quoted", "dog's"]),  # quotes around a word are not part of it
        ("Straße ＲＥＤ", ["strasse", "red"]),  # case-folded, compatibility forms normalised
        ("snake_case 1st", ["snake", "case", "1st"]),
        ("红色的圆", ["红", "色", "的", "圆"]),  # an ideograph is a word: these scripts write no spaces
        ("a red圆, 東京タワー", ["a", "red", "圆", "東", "京", "タワー"]),  # kana stay runs, as in BERT
    ],
)
def test_words_in_any_script(text, words):
    assert tokenize(text) == words


def test_the_earlier_tokenizer_is_kept_for_earlier_runs():
    assert tokenize("côte d’ivoire", tokenizer=1) == ["c", "te", "d", "ivoire"]
    assert tokenize("'quoted'", tokenizer=1) == ["'quoted'"]


class Encoder(FittedVocabulary):
    """The mixin as the encoders use it: `_build` keeps the vocabulary."""

    def __init__(self, max_vocab: int = 100):
        self.config = type("Config", (), {"max_vocab": max_vocab})()

    def _build(self, vocab: Vocabulary) -> None:
        self.vocab = vocab


def test_a_run_keeps_the_tokenizer_it_was_trained_with():
    captions = ["côte d’ivoire flag", "réunion flag", "rescue worker’s helmet"]
    encoder = Encoder()
    encoder.fit(captions)
    assert encoder.vocab is not None and UNK not in encoder.vocab.ids("Côte d'Ivoire flag")
    state = encoder.extra_state_json()
    assert state["tokenizer"] == TOKENIZER
    restored = Encoder()
    restored.load_extra_state_json(state)
    assert restored.vocab is not None and restored.vocab.ids("réunion flag") == encoder.vocab.ids("réunion flag")
    assert Encoder.unknown_words(state, ["réunion flag", "türkiye flag"]) == ["türkiye"]

    # a run saved before tokenizers had numbers: its words were cut the ASCII way, and its prompts still are
    old = {"vocab": ["<pad>", "<unk>", "flag", "r", "union", "c", "te"]}
    earlier = Encoder()
    earlier.load_extra_state_json(old)
    assert earlier.vocab is not None and earlier.vocab.ids("réunion flag") == [3, 4, 2]
    assert Encoder.unknown_words(old, ["réunion flag", "côte flag"]) == []


def test_a_vocabulary_from_a_newer_tokenizer_is_one_line_with_the_upgrade():
    with pytest.raises(UserError, match="tokenizer 9, which this dalle-kit does not have .*; upgrade dalle-kit: "):
        Encoder().load_extra_state_json({"vocab": ["<pad>", "<unk>"], "tokenizer": 9})
