"""A new model family brought by a plugin alone, with no change to dalle-kit's core:

- a new kind of part, ``painter`` (its contract is the `Painter` base, with a conformance check of its own),
  and one part of it, ``linear-painter``;
- the family's objective as a kind of its own, ``paint_objective``, with two parts (``mse``, ``l1``);
- a pipeline ``paint`` on the core trainer: a painter regresses the caption's image under the objective, a family
  with no noise, no generator and no discriminator; its ``[train] contrast`` is a sampling setting
  (``dalle-kit sample RUN ... --set train.contrast=0.5``);
- a training-event hook with a recipe table of its own, ``[hooks.family-log] every = N``: every N-th finished
  step is appended to ``<run>/family-steps.txt``.
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


class PaintObjective(nn.Module, dalle_kit.Part):
    """The paint family's training objective: ``forward(painted, real) -> scalar loss`` (both [B, C, S, S])."""

    kind = "paint_objective"
    grad_inputs = (0,)  # the painted images get a gradient
    conditioned = False  # it compares images; no text

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def example_inputs(cls, part, *, n, context, rng, text_shift=False):
        shape = (n, 3, 8, 8)
        return (torch.rand(shape, generator=rng) * 2 - 1, torch.rand(shape, generator=rng) * 2 - 1)

    @classmethod
    def expected_shape(cls, part, *, n, context):
        return ()


class MSE(PaintObjective):
    """Mean squared error."""

    name = "mse"
    Config = dalle_kit.NoConfig

    def forward(self, painted, real):
        return (painted - real).square().mean()


class L1(PaintObjective):
    """Mean absolute error."""

    name = "l1"
    Config = dalle_kit.NoConfig

    def forward(self, painted, real):
        return (painted - real).abs().mean()


class PaintPipeline(dalle_kit.Pipeline):
    """Regresses each caption's image with a painter under the recipe's objective (Adam)."""

    name = "paint"
    sections = {
        "data": "dataset",
        "text_encoder": "text_encoder",
        "painter": "painter",
        "objective": "paint_objective",
    }

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        lr: float = param(1e-2, "Adam learning rate")
        contrast: float = param(1.0, "sampling: painted images are scaled by this (1: as trained)")

    def setup(self, run, state):
        data = run.parts.dataset()
        train_set = data.load("train")
        encoder = run.parts.text_encoder(state, train_set.captions)
        painter = run.parts.build("painter", text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        objective = run.parts.build("objective")
        modules = {"text_encoder": encoder, "painter": painter}
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.config.lr)
        data_rng = run.rng("data")

        def train_step(done):
            real, captions = train_set.batch(
                torch.randint(len(train_set), (self.config.batch_size,), generator=data_rng)
            )
            loss = objective(painter(encoder(captions)), real.to(run.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item()}

        return dalle_kit.Training(
            modules=modules,
            optimizers={"paint": opt},
            train_step=train_step,
            draw=lambda m: _drawer(m, self.config.contrast),
            extra_state=lambda: {"text_encoder": encoder.extra_state_json()},
        )


def _drawer(modules, contrast):
    encoder, painter = modules["text_encoder"], modules["painter"]
    encoder.eval()
    painter.eval()

    @torch.inference_mode()
    def draw(prompts, rng):
        return (contrast * painter(encoder(list(prompts)))).float().cpu()

    return draw


@attrs.frozen
class FamilyLog:
    every: int = param(1, "append every this many finished steps to family-steps.txt", validator=attrs.validators.gt(0))


@dalle_kit.hookimpl
def register_kinds(register):
    register(Painter, checks=[check_paints_in_range])
    register(PaintObjective)


@dalle_kit.hookimpl
def register_parts(register):
    register(LinearPainter)
    register(MSE)
    register(L1)


@dalle_kit.hookimpl
def register_settings(register):
    register("family-log", FamilyLog)


@dalle_kit.hookimpl
def register_pipelines(register):
    register(PaintPipeline)


@dalle_kit.hookimpl
def train_step_end(trainer, step, values):
    if step % trainer.run.recipe.hooks["family-log"].every:
        return
    with open(trainer.run.dir / "family-steps.txt", "a") as f:
        f.write(f"{step} {trainer.pipeline.name} {values.get('loss', float('nan')):.6f}\n")
