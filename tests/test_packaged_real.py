"""emoji and tuxpaint on the real packages' files, when they are here (slow: the whole sets are decoded).

Kept apart from tests/test_emoji.py and tests/test_tuxpaint.py, which run on small copies in the packages' layouts
and belong to the unit tier.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TUXPAINT_ROOT

import dalle_kit
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins.data.tuxpaint import svg_renderer

PARTS = Registry.discover(select="").parts["dataset"]
Emoji, TuxPaint = PARTS["emoji"].cls, PARTS["tuxpaint"].cls


def load(cls, root, **settings):
    data = cls(cls.Config(root=str(root), **settings))
    return data, data.load("train"), data.load("test")


@pytest.mark.slow
def test_the_real_package():
    """The real emoji-datasource-google 16, when npm has put it where the dataset looks (or in the current folder);
    fetching it here would need the network at test time."""
    try:
        source = Emoji(Emoji.Config()).locate()
    except dalle_kit.UserError as exc:
        pytest.skip(f"emoji-datasource-google is not here: {exc}")
    data, train, test = load(Emoji, source.path)
    assert len(train) + len(test) == 1911 and 150 < len(test) < 250
    assert "grinning face" in train.captions + test.captions
    assert data.parse_caption("grinning face") == {"category": "Smileys & Emotion"}
    _, train_t, test_t = load(Emoji, source.path, skin_tones=True)
    assert len(train_t) + len(test_t) == 1911 + 1875
    assert set(test.captions) <= set(test_t.captions)  # the variants join their emoji's split
    check_part(Emoji, Emoji.Config(root=str(source.path)))
    image = dict(zip(train.captions + test.captions, torch.cat([train.images, test.images])))["red apple"]
    assert image[:, 0, 0].tolist() == [255, 255, 255]  # transparent corner on white


@pytest.mark.slow
def test_the_real_stamps():
    """Debian's tuxpaint-stamps-default, when installed (`apt-get install -y tuxpaint-stamps-default`)."""
    if not TUXPAINT_ROOT.is_dir():
        pytest.skip(f"{TUXPAINT_ROOT} is not here: apt-get update && apt-get install -y tuxpaint-stamps-default")
    data, train, test = load(TuxPaint, TUXPAINT_ROOT)
    total = len(train) + len(test)
    rasterised = svg_renderer()[0] is not None  # 164 stamps only shipped as SVG
    assert (900 < total < 1000 if rasterised else 700 < total < 850) and 60 < len(test) < 140, (len(train), len(test))
    assert "A crowned crane." in train.captions + test.captions
    normal = {" ".join(c.lower().split()).rstrip(" .!") for c in train.captions}
    assert not any(" ".join(c.lower().split()).rstrip(" .!") in normal for c in test.captions)  # a split by sentence
    assert data.skipped.get("without a caption", 0) < 20
    assert "animals" in train.attribute_names["category"]
    check_part(TuxPaint, TuxPaint.Config())
