"""Dataset `shapes`: procedurally drawn captioned shapes, the embedded default (no download).

Each image holds one shape (circle, square, triangle) of one colour, size and position on a dark
background, drawn with anti-aliased edges from signed distances. Captions are plain English:
"a small red circle in the top left", or partial ("a red circle") so short prompts are
in-distribution. Everything is a function of the seed: the same config gives the same pixels.
"""

from __future__ import annotations

import math
import re

import attrs
import torch

import dalle_kit
from dalle_kit import ImageCaptions, param

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 55, 210),
    "white": (235, 235, 235),
}
SIZES = {"small": 0.13, "large": 0.24}  # radius as a fraction of the image side
POSITIONS = {
    "center": (0.5, 0.5),
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
}
ATTRIBUTES = {"shape": list(SHAPES), "colour": list(COLOURS), "size": list(SIZES), "position": list(POSITIONS)}
# Caption forms and how often each is drawn: which attributes the caption states.
FORMS = (
    (("size", "colour", "shape", "position"), 0.5),
    (("size", "colour", "shape"), 0.15),
    (("colour", "shape", "position"), 0.15),
    (("colour", "shape"), 0.2),
)
_SPLIT_SEEDS = {"train": 1, "test": 2}


def caption(attrs_: dict[str, str], stated: tuple[str, ...]) -> str:
    words = ["a"]
    if "size" in stated:
        words.append(attrs_["size"])
    words += [attrs_["colour"], attrs_["shape"]]
    if "position" in stated:
        words.append(f"in the {attrs_['position']}")
    return " ".join(words)


_CAPTION_RE = re.compile(
    r"^an? (?:(?P<size>small|large) )?(?P<colour>\w+) (?P<shape>\w+)(?: in the (?P<position>.+))?$"
)


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption states, e.g. {"colour": "red", "shape": "circle"}; {} if it is not a shapes caption."""
    m = _CAPTION_RE.match(text.strip().lower())
    if not m:
        return {}
    found = {k: v for k, v in m.groupdict().items() if v}
    return found if all(found[k] in ATTRIBUTES[k] for k in found) else {}


def render(
    shape: torch.Tensor,
    colour: torch.Tensor,
    size: torch.Tensor,
    position: torch.Tensor,
    image_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw N images (uint8 [N, 3, S, S]) from attribute indices, with small random jitter."""
    n = len(shape)
    s = image_size
    radius = torch.tensor(list(SIZES.values()))[size] * s
    radius = radius * (1 + 0.08 * (torch.rand(n, generator=generator) - 0.5))
    centres = torch.tensor(list(POSITIONS.values()))[position] * s
    centres = centres + (torch.rand(n, 2, generator=generator) - 0.5) * 0.06 * s
    grid = torch.arange(s, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, s) - centres[:, 0].view(n, 1, 1)
    dy = grid.view(1, s, 1) - centres[:, 1].view(n, 1, 1)
    r = radius.view(n, 1, 1)
    circle = torch.sqrt(dx * dx + dy * dy) - r
    square = torch.maximum(dx.abs(), dy.abs()) - 0.86 * r
    rt = 1.2 * r  # upward triangle with apex (0, -rt) and base at y = rt / 2
    triangle = torch.maximum(dy - 0.5 * rt, math.sqrt(3) / 2 * dx.abs() - 0.5 * (dy + rt))
    sdf = torch.where(shape.view(n, 1, 1) == 0, circle, torch.where(shape.view(n, 1, 1) == 1, square, triangle))
    alpha = (0.5 - sdf).clamp(0, 1).unsqueeze(1)  # one pixel of anti-aliasing
    rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[colour]
    rgb = (rgb + (torch.rand(n, 3, generator=generator) - 0.5) * 24).clamp(0, 255).view(n, 3, 1, 1)
    background = (torch.rand(n, 1, 1, 1, generator=generator) * 40).expand(n, 3, 1, 1)
    image = background * (1 - alpha) + rgb * alpha
    return image.round().clamp(0, 255).to(torch.uint8)


class Shapes(dalle_kit.Dataset):
    """Procedurally drawn, captioned shapes (shape, colour, size, position); embedded, no download."""

    name = "shapes"
    suggested_metrics = ("text-alignment", "fid")

    @attrs.frozen
    class Config:
        size: int = param(
            32, "image side in pixels (16-1024)", validator=[attrs.validators.ge(16), attrs.validators.le(1024)]
        )
        train_size: int = param(
            20000,
            "images in the train split (at most 10 million)",
            validator=[attrs.validators.gt(0), attrs.validators.le(10**7)],
        )
        test_size: int = param(
            2000,
            "images in the test split (at most 10 million)",
            validator=[attrs.validators.gt(0), attrs.validators.le(10**7)],
        )
        seed: int = param(
            0,
            "seed of the drawing; the same seed gives the same images (0 to 2**53)",
            validator=[attrs.validators.ge(0), attrs.validators.le(2**53)],
        )
        partial_captions: bool = param(True, "also caption with some attributes left out ('a red circle')")

    @property
    def image_size(self) -> int:
        return self.config.size

    def load(self, split: str) -> ImageCaptions:
        if split not in _SPLIT_SEEDS:
            raise dalle_kit.UserError(f"shapes: unknown split '{split}'; use 'train' or 'test'")
        n = self.config.train_size if split == "train" else self.config.test_size
        g = torch.Generator().manual_seed(self.config.seed * 1000 + _SPLIT_SEEDS[split])
        labels = {k: torch.randint(len(v), (n,), generator=g) for k, v in ATTRIBUTES.items()}
        forms = [f for f, _ in FORMS] if self.config.partial_captions else [FORMS[0][0]]
        weights = torch.tensor([w for _, w in FORMS]) if self.config.partial_captions else torch.ones(1)
        form_idx = torch.multinomial(weights, n, replacement=True, generator=g)
        images = torch.cat(
            [
                render(
                    labels["shape"][i : i + 4096],
                    labels["colour"][i : i + 4096],
                    labels["size"][i : i + 4096],
                    labels["position"][i : i + 4096],
                    self.config.size,
                    g,
                )
                for i in range(0, n, 4096)
            ]
        )
        names = {k: [ATTRIBUTES[k][j] for j in v.tolist()] for k, v in labels.items()}
        captions = [caption({k: names[k][i] for k in ATTRIBUTES}, forms[f]) for i, f in enumerate(form_idx.tolist())]
        return ImageCaptions(images, captions, attributes=labels, attribute_names=ATTRIBUTES)


@dalle_kit.hookimpl
def register_datasets(register):
    register(Shapes)
