"""A new model family brought by a plugin alone, with no change to dalle-kit's core:

- a new kind of part, ``painter`` (its contract is the `Painter` base, with a conformance check of its own),
  and one part of it, ``linear-painter``;
- a pipeline ``paint`` on the core trainer: a painter regresses the caption's mean image (MSE), a family
  with no noise, no generator and no discriminator;
- a training-event hook: every finished step is appended to ``<run>/family-steps.txt``.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit.tools.testing import ConformanceError


class Painter(nn.Module, dalle_kit.Part):
    """Paints one image per text vector: ``forward(text[B, text_dim]) -> images[B, channels, image_size, image_size]``
    in [-1, 1]. Built as ``Painter(config, text_dim=..., image_size=..., channels=...)``."""

    kind = "painter"
    build_context = ("text_dim", "image_size", "channels")

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__()
        self.config, self.text_dim, self.image_size, self.channels = config, text_dim, image_size, channels


def check_paints_in_range(cls, config=None, **_):
    painter = cls(config or cls.Config(), text_dim=8, image_size=8, channels=3)
    images = painter(torch.randn(4, 8))
    if images.shape != (4, 3, 8, 8) or images.min() < -1 or images.max() > 1:
        raise ConformanceError(
            f"{cls.__name__}: a painter must return [B, C, S, S] images in [-1, 1], got {tuple(images.shape)}"
        )


class LinearPainter(Painter):
    """One linear layer from the text vector to every pixel, then tanh."""

    name = "linear-painter"

    @attrs.frozen
    class Config:
        init_scale: float = param(0.01, "standard deviation of the initial weights")

    def __init__(self, config, **context):
        super().__init__(config, **context)
        self.layer = nn.Linear(self.text_dim, self.channels * self.image_size**2)
        nn.init.normal_(self.layer.weight, std=config.init_scale)
        nn.init.zeros_(self.layer.bias)

    def forward(self, text):
        return torch.tanh(self.layer(text)).view(len(text), self.channels, self.image_size, self.image_size)


class PaintPipeline(dalle_kit.Pipeline):
    """Regresses each caption's image with a painter (mean squared error, Adam)."""

    name = "paint"
    sections = {"data": "dataset", "text_encoder": "text_encoder", "painter": "painter"}

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        lr: float = param(1e-2, "Adam learning rate")

    def _build(self, run, data, state, captions=None):
        encoder = run.build("text_encoder")
        if state is not None:
            encoder.load_extra_state_json(state["extra"]["text_encoder"])
        else:
            encoder.fit(captions)
        painter = run.build("painter", text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        return {"text_encoder": encoder.to(run.device), "painter": painter}

    def setup(self, run, state):
        data = run.build_dataset()
        train_set = data.load("train")
        modules = self._build(run, data, state, train_set.captions)
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.config.lr)
        data_rng = torch.Generator().manual_seed(run.recipe.seed + 1)

        def train_step(done):
            real, captions = train_set.batch(
                torch.randint(len(train_set), (self.config.batch_size,), generator=data_rng)
            )
            loss = (modules["painter"](modules["text_encoder"](captions)) - real.to(run.device)).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item()}

        return dalle_kit.Training(
            modules=modules,
            optimizers={"paint": opt},
            rngs={"data": data_rng},
            train_step=train_step,
            draw=_drawer,
            extra_state=lambda: {"text_encoder": modules["text_encoder"].extra_state_json()},
        )

    def sampler(self, run):
        state = run.load_checkpoint(prefixes=("models", "extra"))
        modules = self._build(run, run.build_dataset(), state)
        for key, module in modules.items():
            module.load_state_dict(state["models"][key])
        return _drawer(modules)


def _drawer(modules):
    encoder, painter = modules["text_encoder"], modules["painter"]
    encoder.eval()
    painter.eval()

    @torch.inference_mode()
    def draw(prompts, rng):
        return painter(encoder(list(prompts))).float().cpu()

    return draw


@dalle_kit.hookimpl
def register_kinds(register):
    register(Painter, checks=[check_paints_in_range])


@dalle_kit.hookimpl
def register_parts(register):
    register(LinearPainter)


@dalle_kit.hookimpl
def register_pipelines(register):
    register(PaintPipeline)


@dalle_kit.hookimpl
def train_step_end(trainer, step, values):
    with open(trainer.run.dir / "family-steps.txt", "a") as f:
        f.write(f"{step} {trainer.pipeline.name} {values.get('loss', float('nan')):.6f}\n")
