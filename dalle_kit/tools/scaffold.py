"""`dalle-kit new-plugin`: write a ready plugin package (pyproject with the entry point, one working
example part per requested kind, tests that use the conformance kit, a README).

The core's kinds have their templates here (`PARTS`); a kind a family adds brings its own as the class attribute
``scaffold`` of its base: a dict with ``hook`` (its registration hook), ``class`` (the example's class name),
``code`` (the class, with ``{name}`` for the part's name), ``imports`` (lines the code needs), ``section`` (its
recipe table) and ``suffix`` (for names in a package of several kinds).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text
from ..registry import HOOK_API_VERSION

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
    "text_encoder": (
        "register_text_encoders",
        "TextEncoder",
        '''
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
''',
    ),
    "dataset": (
        "register_datasets",
        "Dataset",
        '''
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
''',
    ),
    "metric": (
        "register_metrics",
        "Metric",
        '''
class Metric(dalle_kit.Metric):
    """Mean brightness of the generated images minus the reference images' (in 0..1): replace with your score."""

    name = "{name}"
    Config = dalle_kit.NoConfig

    def compute(self, evaluation) -> dalle_kit.MetricResult:
        with evaluation.progress(1, "{name}: brightness", "pass") as bar:
            gap = evaluation.generated.float().mean() / 255 - evaluation.reference.images.float().mean() / 255
            bar.update(1)
        protocol = evaluation.protocol(extractor="mean pixel value", weights_hash="")
        return dalle_kit.MetricResult({{"brightness_gap": float(gap)}}, protocol)
''',
    ),
    "pipeline": (
        "register_pipelines",
        "Pipeline",
        '''
class Pipeline(dalle_kit.Pipeline):
    """Paints each caption's image with one linear layer from the text vector (mean squared error, Adam)."""

    name = "{name}"
    sections = {{"data": "dataset", "text_encoder": "text_encoder"}}

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):  # steps, batch_size, log_every, checkpoint_every, threads
        lr: float = param(1e-2, "Adam learning rate", validator=dalle_kit.finite_positive)

    def setup(self, run, state):  # state: None for a fresh run, else the checkpoint being resumed
        data = run.parts.dataset()
        train_set = data.load("train")
        encoder = run.parts.text_encoder(state, train_set.captions)
        shape = (data.channels, data.image_size, data.image_size)
        painter = nn.Linear(max(encoder.dim, 1), shape[0] * shape[1] * shape[2]).to(run.device)
        modules = {{"text_encoder": encoder, "painter": painter}}
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.config.lr)
        rng = run.rng("data")  # a named random stream: saved and restored on resume

        def paint(enc, net, captions):
            text = enc(captions) if enc.dim else torch.zeros(len(captions), 1, device=run.device)
            return torch.tanh(net(text)).view(len(captions), *shape)

        def train_step(done):
            idx = torch.randint(len(train_set), (self.config.batch_size,), generator=rng)
            real, captions = train_set.batch(idx)
            loss = (paint(run.parts.parallel(encoder), run.parts.parallel(painter), captions) - real.to(run.device))
            loss = loss.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {{"loss": loss.item()}}

        def draw(m):  # the modules to draw with -> (prompts, rng) -> images in [-1, 1]
            return lambda prompts, rng: paint(m["text_encoder"], m["painter"], list(prompts)).detach().float().cpu()

        return dalle_kit.Training(
            modules=modules,
            optimizers={{"paint": opt}},
            train_step=train_step,
            draw=draw,
            extra_state=lambda: {{"text_encoder": encoder.extra_state_json()}},
        )
''',
    ),
}

#: Examples that are not one part of an existing kind: a new kind (its base and a part) and a training-event hook
#: with a recipe table of its own. Their code registers itself; ``class`` is what the tests check (None: nothing).
EXTRAS: dict[str, dict[str, Any]] = {
    "kind": {
        "hook": None,
        "class": "LinearPainter",
        "section": "{kind}",
        "suffix": "painter",
        "imports": "",
        "code": '''
class Painter(nn.Module, dalle_kit.Part):
    """A new kind of part (its docstring is the kind's contract): paints one image per text vector,
    ``forward(text[B, text_dim]) -> images[B, channels, image_size, image_size]`` in [-1, 1]; built as
    ``cls(config, text_dim=..., image_size=..., channels=...)``. A pipeline names it in its ``sections``."""

    kind = "{kind}"
    build_context = ("text_dim", "image_size", "channels")
    output_range = (-1.0, 1.0)

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__()
        self.config, self.text_dim, self.image_size, self.channels = config, text_dim, image_size, channels

    @classmethod
    def example_inputs(cls, part, *, n, context, rng, text_shift=False):  # how the conformance kit feeds it
        text = torch.randn(n + 1, part.text_dim, generator=rng)
        return (text[1:] if text_shift else text[:-1],)

    @classmethod
    def expected_shape(cls, part, *, n, context):
        return (n, part.channels, part.image_size, part.image_size)


class LinearPainter(Painter):
    """One linear layer from the text vector to every pixel, then tanh."""

    name = "{name}"

    @attrs.frozen
    class Config:
        init_scale: float = param(0.01, "standard deviation of the initial weights", validator=attrs.validators.gt(0))

    def __init__(self, config, **context):
        super().__init__(config, **context)
        self.layer = nn.Linear(self.text_dim, self.channels * self.image_size**2)
        nn.init.normal_(self.layer.weight, std=config.init_scale)

    def forward(self, text):
        return torch.tanh(self.layer(text)).view(len(text), self.channels, self.image_size, self.image_size)


@dalle_kit.hookimpl
def register_kinds(register):
    register(Painter)  # register(Painter, checks=[...]) adds conformance checks of the kind's own


@dalle_kit.hookimpl
def register_parts(register):
    register(LinearPainter)
''',
    },
    "hook": {
        "hook": None,
        "class": None,
        "section": "hooks.{name}",
        "suffix": "hook",
        "imports": "",
        "code": '''
@attrs.frozen
class EarlyStopping:
    """The recipe's [hooks.{name}] table."""

    patience: int = param(0, "stop after this many logged losses without a new best (0: never)",
                          validator=attrs.validators.ge(0))
    min_delta: float = param(0.0, "how much lower than the best a loss must be to count", validator=attrs.validators.ge(0))


_best: dict = {{}}  # run directory -> [best loss, logged losses since]: rebuilt from metrics.jsonl on resume


@dalle_kit.hookimpl
def register_settings(register):
    register("{name}", EarlyStopping)


@dalle_kit.hookimpl
def train_start(trainer):
    """Rebuild the stopper's state from the rows this run has logged (so a resumed run decides as one would that
    was never stopped)."""
    state = _best[trainer.run.dir] = [float("inf"), 0]
    for row in trainer.run.files.read_metrics():
        if row.get("kind") == "train" and "loss" in row:
            _update(state, row["loss"], trainer.run.recipe.hooks["{name}"].min_delta)


def _update(state, loss, min_delta):
    state[:] = [loss, 0] if loss < state[0] - min_delta else [state[0], state[1] + 1]


@dalle_kit.hookimpl
def train_step_end(trainer, step, values):
    settings = trainer.run.recipe.hooks["{name}"]
    if not settings.patience or "loss" not in values or step % trainer.config.log_every:
        return
    state = _best.setdefault(trainer.run.dir, [float("inf"), 0])
    _update(state, values["loss"], settings.min_delta)
    if state[1] >= settings.patience:
        trainer.request_stop(f"no new best loss in {{settings.patience}} logged steps")
''',
    },
}


TESTS = '''\
"""Checks the parts of {dist} against dalle-kit's contracts with its conformance kit."""

import pytest

from dalle_kit.tools.testing import check_part

from {module} import {classes}


@pytest.mark.parametrize("part", [{classes}])
def test_part_conforms(part):
    check_part(part)
'''

PYPROJECT = """\
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
"""

README = """\
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
`pytest` checks every part against its kind's contract (`dalle_kit.tools.testing.check_part`).
Publish with `python -m build && twine upload dist/*`.
"""

SECTION = {"text_encoder": "text_encoder", "dataset": "data", "metric": "eval", "pipeline": "pipeline"}


#: The suffix of a part's name in a package that makes several kinds (toy-text, toy-data, ...).
PART_SUFFIX = {"text_encoder": "text", "dataset": "data", "metric": "metric", "pipeline": "pipeline"}


def templates(registry=None) -> dict[str, dict[str, str]]:
    """Every kind the scaffold can make an example of: the core's, and those whose base brings a ``scaffold``."""
    out = {
        kind: {
            "hook": hook,
            "class": cls,
            "code": code,
            "imports": "",
            "section": SECTION[kind],
            "suffix": PART_SUFFIX[kind],
        }
        for kind, (hook, cls, code) in PARTS.items()
    }
    out.update({kind: dict(template) for kind, template in EXTRAS.items()})
    if registry is None:
        from ..registry import get_registry

        registry = get_registry()
    for kind, base in registry.kinds.items():
        template = getattr(base, "scaffold", None)
        if isinstance(template, dict) and kind not in out:
            out[kind] = {"imports": "", "section": kind, "suffix": kind, **template}
    return out


def part_name(name: str, kind: str, kinds: list[str], made: dict[str, dict[str, str]]) -> str:
    """The name a part is registered under: the plugin's name for a one-part package, else name-suffix by kind."""
    return name if len(kinds) == 1 else f"{name}-{made[kind]['suffix']}"


def recipe_usage(kind: str, part: str, section: str) -> str:
    """The recipe lines that use the example of `kind`."""
    if kind == "pipeline":
        return f'pipeline = "{part}"'
    if kind == "metric":
        return f'[eval]\nmetrics = ["{part}"]'
    if kind == "hook":
        return f"[{section}]\npatience = 3"
    if kind == "kind":
        return f'# in a recipe whose pipeline names the kind in its sections:\n[{section}]\nname = "{part}"'
    return f'[{section}]\nname = "{part}"'


def new_plugin(name: str, kinds: list[str], directory: str | Path = ".", api: int = HOOK_API_VERSION) -> Path:
    """Write the package for plugin `name` under `directory`; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise UserError(
            f"new-plugin: name {name!r} must be lowercase letters, digits and '-', starting with a letter (e.g. my-gan)"
        )
    made = templates()
    kinds = list(dict.fromkeys(kinds or ["generator" if "generator" in made else "text_encoder"]))
    unknown = [k for k in kinds if k not in made]
    if unknown:
        raise UserError(f"new-plugin: cannot make an example of kind {unknown[0]!r}; choose from: {', '.join(made)}")
    name = name.removeprefix("dalle-kit-")  # the package gets the prefix once: new-plugin dalle-kit-x makes dalle-kit-x
    if not name:
        raise UserError("new-plugin: give the plugin's own name after 'dalle-kit-', for example dalle-kit-my-gan")
    dist = f"dalle-kit-{name}"
    module = f"dalle_kit_{name.replace('-', '_')}"
    root = Path(directory) / dist
    if root.exists():
        raise UserError(f"new-plugin: {root} already exists; choose another name or --dir (nothing was written)")
    classes = [made[k]["class"] for k in kinds if made[k]["class"]]
    imports = "".join(dict.fromkeys(made[k]["imports"] for k in kinds if made[k]["imports"]))
    body = HEADER.format(dist=dist, api=api).replace(
        "from dalle_kit import param\n", "from dalle_kit import param\n" + imports
    )
    body = body.rstrip("\n") + "\n"
    part_names = {k: part_name(name, k, kinds, made) for k in kinds}
    kind_name = f"{module.removeprefix('dalle_kit_')}_painter"  # a kind of the package's own
    body += "".join(
        "\n\n" + made[k]["code"].format(name=part_names[k], kind=kind_name).strip("\n") + "\n" for k in kinds
    )
    body = body.replace("\n\n\n\n", "\n\n\n")
    for kind in kinds:
        if made[kind]["hook"]:
            body += (
                f"\n\n@dalle_kit.hookimpl\ndef {made[kind]['hook']}(register):\n    register({made[kind]['class']})\n"
            )
    usage = "\n".join(  # the pipeline's top-level key before any table
        recipe_usage(k, part_names[k], made[k]["section"].format(kind=kind_name, name=part_names[k]))
        for k in sorted(kinds, key=lambda k: k != "pipeline")
    )
    files = {
        root / "pyproject.toml": PYPROJECT.format(dist=dist, name=name, module=module, kinds=", ".join(kinds)),
        root / module / "__init__.py": body,
        root / "tests" / f"test_{module}.py": TESTS.format(dist=dist, module=module, classes=", ".join(classes)),
        root / "README.md": README.format(
            dist=dist,
            module=module,
            usage=usage,
            parts=", ".join(
                "a training-event hook with its recipe table [hooks." + part_names[k] + "]"
                if k == "hook"
                else f"a new kind `{kind_name}` with its part `{part_names[k]}`"
                if k == "kind"
                else f"{k.replace('_', ' ')} `{part_names[k]}`"
                for k in kinds
            ),
        ),
    }
    for path, text in files.items():
        atomic_write_text(path, textwrap.dedent(text).lstrip("\n") if path.suffix != ".py" else text)
    return root
