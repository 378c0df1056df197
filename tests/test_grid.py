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
