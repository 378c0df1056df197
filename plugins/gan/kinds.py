"""The GAN family's kinds of part: `generator`, `discriminator` and the adversarial `loss`, registered through
``register_kinds`` exactly as a third party registers a kind, each with its conformance checks and its registration
hook (``register_generators``, ``register_discriminators``, ``register_losses``).

A generator maps noise and a text vector to images; the VAE family uses the same kind for its decoder.
`prior_sampler` draws images from a generator and a text encoder, for the pipelines that sample from a prior.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import dalle_kit
from dalle_kit.tools.testing import ConformanceError, fail
from dalle_kit_plugins.common.rerank import best_of

#: What generators and discriminators are built with (`dalle_kit.Part.build_context`).
CONTEXT = ("text_dim", "image_size", "channels")


class Generator(nn.Module, dalle_kit.Part):
    """Maps noise and a text vector to images: ``forward(z[B, latent_dim], text[B, D]) -> [B, C, H, W]`` in [-1, 1].

    Context: ``text_dim``, ``image_size``, ``channels``. ``conditioning_layers`` names (fnmatch patterns
    over ``named_modules()``) the layers that read the text; parameter-efficient fine-tuning trains only those.
    """

    kind = "generator"
    build_context = CONTEXT
    output_range = (-1.0, 1.0)
    latent_dim: int
    conditioning_layers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__()
        self.config, self.text_dim, self.image_size, self.channels = config, text_dim, image_size, channels

    def sample_latent(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(device or "cpu")

    @classmethod
    def example_inputs(
        cls, part, *, n: int, context: dict[str, Any], rng: torch.Generator, text_shift: bool = False
    ) -> tuple:
        text = torch.randn(n, context["text_dim"], generator=rng)
        if not isinstance(getattr(part, "latent_dim", None), int) or part.latent_dim <= 0:
            fail(cls, "output shape", f"latent_dim must be a positive int, got {getattr(part, 'latent_dim', None)!r}")
        z = torch.randn(n, part.latent_dim, generator=rng)
        return z, (-torch.roll(text, 1, dims=0) if text_shift else text)

    @classmethod
    def expected_shape(cls, part, *, n: int, context: dict[str, Any]) -> tuple[int, ...]:
        return (n, context["channels"], context["image_size"], context["image_size"])


class Discriminator(nn.Module, dalle_kit.Part):
    """Judges image-text pairs: ``forward(images[B, C, H, W], text[B, D]) -> logits[B]`` (higher = real).

    Context: ``text_dim``, ``image_size``, ``channels``. ``conditioning_layers``: as for `Generator`. The images
    must receive gradients (the generator learns through them, and so do gradient penalties).
    """

    kind = "discriminator"
    build_context = CONTEXT
    grad_inputs = (0,)
    conditioning_layers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__()
        self.config, self.text_dim, self.image_size, self.channels = config, text_dim, image_size, channels

    @classmethod
    def example_inputs(
        cls, part, *, n: int, context: dict[str, Any], rng: torch.Generator, text_shift: bool = False
    ) -> tuple:
        text = torch.randn(n, context["text_dim"], generator=rng)
        images = torch.rand(n, context["channels"], context["image_size"], context["image_size"], generator=rng) * 2 - 1
        return images, (-torch.roll(text, 1, dims=0) if text_shift else text)

    @classmethod
    def expected_shape(cls, part, *, n: int, context: dict[str, Any]) -> tuple[int, ...]:
        return (n,)


class Loss(dalle_kit.Part):
    """Adversarial objective from logits; optionally a regulariser that needs the images.

    Context: none. What the ``gan`` pipeline calls, in order, each step (B = ``[train] batch_size``):

    1. ``n_critic`` times: ``discriminator_loss(real_logits, fake_logits)`` with ``real_logits`` = D(real, t), shape
       [B], and ``fake_logits`` = D(G(z, t), t), shape [B]; with ``[train] matching_aware`` it is
       ``cat([D(G(z, t), t), D(real, t')])``, shape [2B] (the second half: real images with another sample's
       caption), so a loss must not pair real and fake logits by index. Then ``penalty(discriminator, real,
       fake, text)``: the images D just saw (after any augmentation), [B, C, H, W] in [-1, 1], ``fake``
       detached, and the captions' embeddings [B, text_dim]; its result is added to the discriminator's loss.
    2. ``generator_loss(fake_logits)`` with ``fake_logits`` = D(G(z, t), t), [B], from the updated D (whose
       parameters take no gradient here). A loss with ``needs_real_logits = True`` is called as
       ``generator_loss(fake_logits, real_logits)``, ``real_logits`` = D(real, t) on the same batch, [B]
       (relativistic losses need both; this costs one more D forward per step).

    3. For a loss whose `after_steps` is true: after each discriminator step (after the generator's step too, for
       the last of a training step), ``after_step(real_logits, fake_logits)``: D(real, t) and D(G(z, t), t), [B],
       recomputed on that step's real images, noise and captions by the networks as they are now, without
       gradients and without changing batch-norm statistics (compare_gan's order for BEGAN's k).

    A loss may keep state between steps (BEGAN's k): `extra_state_json` is saved with every checkpoint.
    """

    kind = "loss"
    #: Whether `generator_loss` takes the discriminator's logits on real images too (see the class docstring).
    needs_real_logits: ClassVar[bool] = False
    #: Whether the pipeline calls `after_step` (see the class docstring); a property where a setting decides.
    after_steps: bool = False

    def __init__(self, config):
        self.config = config

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def penalty(self, discriminator: Discriminator, real: Tensor, fake: Tensor, text: Tensor) -> Tensor | None:
        """An extra discriminator term (gradient penalty, R1); None when the loss has none."""
        return None

    def after_step(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        """Update the loss's state from the logits the networks give after a step (only if `after_steps`)."""


def prior_sampler(
    encoder: dalle_kit.TextEncoder,
    generator: Generator,
    device,
    judge: Discriminator | None = None,
    candidates: int = 1,
):
    """``(prompts, rng) -> images in [-1, 1]`` (CPU, float): z from ``generator.sample_latent``, decoded with the
    prompts' vectors. With a `judge` and ``candidates > 1``, each image is the one of `candidates` draws for its
    prompt that the judge (the run's discriminator) rates most real for that prompt: best-of-N re-ranking, as
    DALL-E re-ranks by CLIP and in the spirit of discriminator rejection sampling (Azadi et al. 2019). Puts the
    networks in eval mode; pipelines build their samplers from it."""
    encoder.eval()
    generator.eval()
    if judge is not None:
        judge.eval()

    @torch.inference_mode()
    def draw(prompts, rng: torch.Generator) -> Tensor:
        text = encoder(prompts)
        return (
            best_of(
                candidates if judge is not None else 1,
                lambda: generator(generator.sample_latent(len(prompts), rng, device), text),
                lambda images: judge(images, text).float().flatten(),
            )
            .float()
            .cpu()
        )

    return draw


# ------------------------------------------------------------------ conformance of losses
class LinearJudge(Discriminator):
    """A linear discriminator for checking loss penalties: logits = <w, x> + <v, t>."""

    name = "linear-judge"

    def __init__(self):
        super().__init__(None, text_dim=16, image_size=8, channels=3)
        self.weight = nn.Parameter(torch.linspace(-1, 1, 3 * 8 * 8))
        self.text_weight = nn.Parameter(torch.ones(16) / 4)

    def forward(self, images, text):
        return images.flatten(1) @ self.weight + text @ self.text_weight


def check_loss_contract(cls: type[Loss], config: Any = None, **_: Any) -> None:
    """Scalar, finite values; lower for D when real logits are high and fake ones low, lower for G when fakes are
    rated real; gradients to the logits; a penalty that is None or a non-negative scalar reaching D's parameters."""
    loss = cls(config if config is not None else cls.Config())
    high, low = torch.full((8,), 3.0), torch.full((8,), -3.0)
    real = torch.linspace(-1, 1, 8)  # what D says of the batch's real images, for a loss with needs_real_logits

    def generator_loss(fake):
        return loss.generator_loss(fake, real) if cls.needs_real_logits else loss.generator_loss(fake)

    for name, value in [
        ("discriminator_loss", loss.discriminator_loss(high, low)),
        ("generator_loss", generator_loss(low)),
        (
            "discriminator_loss with matching_aware (twice as many fake logits)",
            loss.discriminator_loss(high, torch.cat([low, low])),
        ),
    ]:
        if not isinstance(value, torch.Tensor) or value.dim() != 0 or not torch.isfinite(value):
            fail(cls, "output shape", f"{name} must return a finite scalar tensor, got {value!r}")

    def fresh() -> Loss:  # a stateful loss (BEGAN's k) compares from the same state
        return cls(config if config is not None else cls.Config())

    if not fresh().discriminator_loss(high, low) < fresh().discriminator_loss(low, high):
        fail(cls, "direction", "discriminator_loss must be lower when real logits are high and fake logits low")
    if not generator_loss(high) < generator_loss(low):
        fail(cls, "direction", "generator_loss must be lower when the discriminator rates fakes as real")
    logits = torch.zeros(8, requires_grad=True)
    generator_loss(logits).backward()
    if logits.grad is None or logits.grad.abs().sum() == 0:
        fail(cls, "gradients", "generator_loss gives no gradient to the logits")
    judge = LinearJudge()
    g = torch.Generator().manual_seed(0)
    real_images, fake_images = (torch.rand(4, 3, 8, 8, generator=g) * 2 - 1 for _ in range(2))
    penalty = loss.penalty(judge, real_images, fake_images, torch.randn(4, 16, generator=g))
    if penalty is not None:
        if not isinstance(penalty, torch.Tensor) or penalty.dim() != 0 or not torch.isfinite(penalty) or penalty < 0:
            fail(cls, "penalty", f"penalty must be None or a finite, non-negative scalar tensor, got {penalty!r}")
        if penalty.requires_grad:
            penalty.backward()
        if judge.weight.grad is None or judge.weight.grad.abs().sum() == 0:
            fail(cls, "penalty", "the penalty gives no gradient to the discriminator's parameters")


# ------------------------------------------------------------------ templates for `dalle-kit new-plugin`
IMPORTS = "from dalle_kit_plugins import gan\n"
Generator.scaffold = {
    "hook": "register_generators",
    "class": "Generator",
    "imports": IMPORTS,
    "section": "generator",
    "suffix": "generator",
    "code": '''class Generator(gan.Generator):
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
''',
}
Discriminator.scaffold = {
    "hook": "register_discriminators",
    "class": "Discriminator",
    "imports": IMPORTS,
    "section": "discriminator",
    "suffix": "discriminator",
    "code": '''class Discriminator(gan.Discriminator):
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
''',
}
Loss.scaffold = {
    "hook": "register_losses",
    "class": "Loss",
    "imports": IMPORTS,
    "section": "loss",
    "suffix": "loss",
    "code": '''class Loss(gan.Loss):
    """Least squares (LSGAN, Mao et al. 2017): D pushes real to 1 and fake to 0, G pushes fake to 1."""

    name = "{name}"

    def discriminator_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()

    def generator_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1) ** 2).mean()
''',
}

__all__ = [
    "CONTEXT",
    "ConformanceError",
    "Discriminator",
    "Generator",
    "LinearJudge",
    "Loss",
    "check_loss_contract",
    "prior_sampler",
]


@dalle_kit.hookimpl
def register_kinds(register):
    register(Generator, hook="register_generators")
    register(Discriminator, hook="register_discriminators")
    register(Loss, checks=[check_loss_contract], hook="register_losses")
