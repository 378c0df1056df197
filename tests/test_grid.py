"""Sample grids: one labelled row per prompt; many draws of a prompt wrap into lines instead of one long strip."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dalle_kit.tools.sample import save_grid


def test_a_prompt_with_many_draws_wraps_and_a_few_stay_on_one_line(tmp_path):
    cell = 64 + 2
    many = Image.open(save_grid(torch.zeros(64, 1, 28, 28), ["a handwritten digit"], tmp_path / "many.png"))
    few = Image.open(save_grid(torch.zeros(16, 3, 16, 16), ["a red circle", "a blue square"], tmp_path / "few.png"))
    label = few.size[0] - 8 * cell
    assert many.size[1] == 4 * cell and many.size[0] - 16 * cell >= 60  # 64 draws: 4 lines of 16
    assert few.size[1] == 2 * cell and label >= 60  # 8 draws each: one line per prompt
    # every tile is where it belongs: the last of the 64 at line 4, column 16 (mid-grey images: 128)
    pixels = torch.from_numpy(np.asarray(many.convert("L")).copy())
    x0 = many.size[0] - 16 * cell
    assert pixels[3 * cell + 10, x0 + 15 * cell + 10] == 128 and pixels[3 * cell + 10, x0 - 5] == 255


def test_the_suffix_chooses_the_format_and_an_unknown_one_is_refused(tmp_path):
    import pytest

    from dalle_kit import UserError

    images = torch.rand(2, 3, 8, 8) * 2 - 1
    for name, fmt in [("g.png", "PNG"), ("g.JPG", "JPEG"), ("g.webp", "WEBP"), ("g", "PNG")]:
        assert Image.open(save_grid(images, ["a", "b"], tmp_path / name)).format == fmt, name
    with pytest.raises(UserError, match=r"g.gif: cannot write a grid as .gif; name a .png, .jpg, .jpeg or .webp file"):
        save_grid(images, ["a", "b"], tmp_path / "g.gif")
    assert not (tmp_path / "g.gif").exists()


def _font_with(path, chars: str):
    """A TrueType font that has a square glyph for each of `chars` and nothing else."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"uni{ord(c):04X}" for c in chars]
    pen = TTGlyphPen(None)
    pen.moveTo((50, 0))
    pen.lineTo((550, 0))
    pen.lineTo((550, 500))
    pen.lineTo((50, 500))
    pen.closePath()
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): f"uni{ord(c):04X}" for c in chars})
    builder.setupGlyf({name: pen.glyph() for name in names})
    builder.setupHorizontalMetrics({name: (600, 50) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "Squares", "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    builder.save(str(path))
    return path


def test_labels_take_a_font_that_draws_them_or_say_which_characters_cannot_be_drawn(tmp_path, monkeypatch):
    import warnings

    import pytest

    from dalle_kit.tools import fonts

    monkeypatch.setattr(fonts, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's default font drew these as boxes; DejaVu Sans has them
        assert fonts.font_file(["un carré rouge", "Straße", "Ωμέγα", "кошка"]) == fonts._dejavu()
    squares = _font_with(tmp_path / "squares.ttf", "红色圆")
    monkeypatch.setattr(fonts, "_system_fonts", lambda: ("/nowhere/broken.ttf", str(squares)))
    with pytest.warns(UserWarning, match="no font here draws all of '圆', '的', '红', '色'"):
        assert fonts.font_file(["红色的圆"]) == fonts._dejavu()  # '的' is in no font: DejaVu, with a warning ...
    assert fonts.font_file(["红色 圆"]) == str(squares)  # ... and the first font that has them all when one does
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    assert Image.open(save_grid(images, ["红色", "圆"], tmp_path / "g.png")).format == "PNG"

    monkeypatch.setattr(fonts, "_system_fonts", lambda: ())
    with pytest.warns(UserWarning, match=r"no font here draws all of '东' .*apt-get install -y fonts-noto-cjk"):
        fonts.font_file(["东"])
    with pytest.warns(
        UserWarning, match=r"no font here draws all of '\U00010000' \(they show as boxes\); install a font"
    ) as w:
        fonts.font_file(["\U00010000"])
    assert "apt-get" not in str(w[0].message)
