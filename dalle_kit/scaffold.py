"""`dalle-kit new-plugin`: write a ready plugin package (pyproject with the entry point, one working
example part per requested kind, tests that use the conformance kit, a README)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from .errors import UserError
from .files import atomic_write_text

HEADER = '''\
"""{dist}: dalle-kit plugin. Each class below is one part; the hooks at the end register them."""

from __future__ import annotations

import zlib

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param

DALLE_KIT_API = {api}

'''

PARTS = {
    "generator": ("register_generators", "Generator", '''
class Generator(dalle_kit.Generator):
    """A two-layer perceptron from (noise, text vector) to pixels in [-1, 1]."""

    name = "{name}"

    @attrs.frozen
    class Config:
        latent_dim: int = param(32, "size of the noise vector", validator=attrs.validators.gt(0))
        hidden: int = param(256, "hidden units", validator=attrs.validators.gt(0))

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + text_dim, config.hidden), nn.ReLU(),
            nn.Linear(config.hidden, channels * image_size * image_size), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([z, text], dim=1))
        return out.view(len(z), self.channels, self.image_size, self.image_size)
'''),
    "discriminator": ("register_discriminators", "Discriminator", '''
class Discriminator(dalle_kit.Discriminator):
    """A perceptron with projection conditioning: logit = w.h + <W t, h>."""

    name = "{name}"

    @attrs.frozen
    class Config:
        hidden: int = param(256, "hidden units", validator=attrs.validators.gt(0))

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size * image_size, config.hidden), nn.LeakyReLU(0.2))
        self.head = nn.Linear(config.hidden, 1)
        self.embed = nn.Linear(text_dim, config.hidden, bias=False)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        return self.head(h).squeeze(1) + (self.embed(text) * h).sum(dim=1)
'''),
    "text_encoder": ("register_text_encoders", "TextEncoder", '''
class TextEncoder(dalle_kit.TextEncoder):
    """Hashed bag of words: each word goes to one of `buckets` learned embeddings (no vocabulary to fit)."""

    name = "{name}"

    @attrs.frozen
    class Config:
        dim: int = param(64, "size of the caption vector", validator=attrs.validators.gt(0))
        buckets: int = param(4096, "number of hash buckets", validator=attrs.validators.gt(0))

    def __init__(self, config):
        super().__init__(config)
        self.dim = config.dim
        self.embedding = nn.EmbeddingBag(config.buckets, config.dim, mode="mean")
        self.norm = nn.LayerNorm(config.dim, elementwise_affine=False)

    def encode(self, captions) -> torch.Tensor:
        ids = [[zlib.crc32(w.encode()) % self.config.buckets for w in c.lower().split()] or [0] for c in captions]
        device = self.embedding.weight.device
        flat = torch.tensor([i for row in ids for i in row], device=device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], device=device).cumsum(0)
        return self.norm(self.embedding(flat, offsets))
'''),
    "loss": ("register_losses", "Loss", '''
class Loss(dalle_kit.Loss):
    """Least squares (LSGAN, Mao et al. 2017): D pushes real to 1 and fake to 0, G pushes fake to 1."""

    name = "{name}"

    def discriminator_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()

    def generator_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1) ** 2).mean()
'''),
    "dataset": ("register_datasets", "Dataset", '''
COLOURS = {{"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40)}}


class Dataset(dalle_kit.Dataset):
    """Solid-colour images with a little noise, captioned "a red image"; deterministic by seed."""

    name = "{name}"

    @attrs.frozen
    class Config:
        size: int = param(32, "image side in pixels", validator=attrs.validators.gt(0))
        train_size: int = param(1000, "images in the train split", validator=attrs.validators.gt(0))
        test_size: int = param(200, "images in the test split", validator=attrs.validators.gt(0))
        seed: int = param(0, "seed of the data")

    @property
    def image_size(self) -> int:
        return self.config.size

    def load(self, split: str) -> dalle_kit.ImageCaptions:
        if split not in self.splits:
            raise dalle_kit.UserError(f"{name}: unknown split {{split!r}}; use 'train' or 'test'")
        n = self.config.train_size if split == "train" else self.config.test_size
        g = torch.Generator().manual_seed(self.config.seed * 2 + (split == "test"))
        labels = torch.randint(len(COLOURS), (n,), generator=g)
        rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[labels].view(n, 3, 1, 1)
        noise = torch.randn(n, 3, self.config.size, self.config.size, generator=g) * 12
        images = (rgb + noise).round().clamp(0, 255).to(torch.uint8)
        names = list(COLOURS)
        return dalle_kit.ImageCaptions(images, [f"a {{names[i]}} image" for i in labels.tolist()],
                                       attributes={{"colour": labels}}, attribute_names={{"colour": names}})
'''),
}

TESTS = '''\
"""Checks the parts of {dist} against dalle-kit's contracts with its conformance kit."""

import pytest

from dalle_kit.testing import check_part

from {module} import {classes}


@pytest.mark.parametrize("part", [{classes}])
def test_part_conforms(part):
    check_part(part)
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "dalle-kit plugin: {kinds}"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["dalle-kit"]

[project.optional-dependencies]
test = ["pytest"]

# dalle-kit finds the plugin through this entry point: nothing else to configure.
[project.entry-points."dalle_kit"]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
'''

README = '''\
# {dist}

A [dalle-kit](https://pypi.org/project/dalle-kit/) plugin providing: {parts}.

```bash
pip install -e .            # then: dalle-kit plugins list
pip install -e ".[test]" && pytest
```

Use it in a recipe by name:

```toml
{usage}
```

Edit `{module}/__init__.py`; keep each part's `Config` in step with its constructor, and
`pytest` checks every part against its kind's contract (`dalle_kit.testing.check_part`).
Publish with `python -m build && twine upload dist/*`.
'''

SECTION = {"generator": "generator", "discriminator": "discriminator", "text_encoder": "text_encoder", "loss": "loss", "dataset": "data"}


#: The suffix of a part's name in a package that makes several kinds (toy-generator, toy-loss, ...).
PART_SUFFIX = {"generator": "generator", "discriminator": "discriminator", "text_encoder": "text", "loss": "loss", "dataset": "data"}


def part_name(name: str, kind: str, kinds: list[str]) -> str:
    """The name a part is registered under: the plugin's name for a one-part package, else name-suffix by kind."""
    return name if len(kinds) == 1 else f"{name}-{PART_SUFFIX[kind]}"


def new_plugin(name: str, kinds: list[str], directory: str | Path = ".", api: int = 1) -> Path:
    """Write the package for plugin `name` under `directory`; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise UserError(f"new-plugin: name {name!r} must be lowercase letters, digits and '-', starting with a letter (e.g. my-gan)")
    kinds = list(dict.fromkeys(kinds or ["generator"]))
    unknown = [k for k in kinds if k not in PARTS]
    if unknown:
        raise UserError(f"new-plugin: cannot make an example of kind {unknown[0]!r}; choose from: {', '.join(PARTS)}")
    name = name.removeprefix("dalle-kit-")  # the package gets the prefix once: new-plugin dalle-kit-x makes dalle-kit-x
    if not name:
        raise UserError("new-plugin: give the plugin's own name after 'dalle-kit-', for example dalle-kit-my-gan")
    dist = f"dalle-kit-{name}"
    module = f"dalle_kit_{name.replace('-', '_')}"
    root = Path(directory) / dist
    if root.exists():
        raise UserError(f"new-plugin: {root} already exists; choose another name or --dir (nothing was written)")
    classes = [PARTS[k][1] for k in kinds]
    body = HEADER.format(dist=dist, api=api)
    part_names = {k: part_name(name, k, kinds) for k in kinds}
    body += "".join(PARTS[k][2].format(name=part_names[k]) for k in kinds)
    for kind in kinds:
        hook, cls, _ = PARTS[kind]
        body += f"\n\n@dalle_kit.hookimpl\ndef {hook}(register):\n    register({cls})\n"
    usage = "\n".join(f'[{SECTION[k]}]\nname = "{part_names[k]}"' for k in kinds)
    files = {
        root / "pyproject.toml": PYPROJECT.format(dist=dist, name=name, module=module, kinds=", ".join(kinds)),
        root / module / "__init__.py": body,
        root / "tests" / f"test_{module}.py": TESTS.format(dist=dist, module=module, classes=", ".join(classes)),
        root / "README.md": README.format(dist=dist, module=module, usage=usage,
                                          parts=", ".join(f"{k.replace('_', ' ')} `{part_names[k]}`" for k in kinds)),
    }
    for path, text in files.items():
        atomic_write_text(path, textwrap.dedent(text).lstrip("\n") if path.suffix != ".py" else text)
    return root
