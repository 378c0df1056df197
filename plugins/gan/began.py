"""BEGAN (Berthelot et al. 2017) as Lucic et al. 2018 ran it (google/compare_gan's first commit, ``gans/BEGAN.py``):
discriminator `began`, an auto-encoder, and loss `began`, the equilibrium objective.

The discriminator encodes an image (4x4 stride-2 convolutions to 64 then 128 channels, the first with lrelu, a
64-d fc code, [BN], lrelu), decodes it (fc to 128 * (s/4)^2, [BN], lrelu, 4x4 stride-2 transposed convolutions to 64
channels, [BN], lrelu, and to the image's channels, sigmoid) and returns the negative mean L1 reconstruction error of
each image in [0, 1] pixels: a logit in the contract's sense (higher = more real), so any metric that reads
logits reads it. With a text vector the decoder also reads the projected text beside the code.

The loss is BEGAN's: D minimises err(real) - k err(fake), G minimises err(fake), and after each discriminator step
k += lambda (gamma err(real) - err(fake)). As compare_gan does it (``k_update = "after"``), the errors are
recomputed on the step's batch and noise by the networks after their steps (the generator's too, for the last
discriminator step of a training step: `gan.Loss.after_step`); ``k_update = "during"`` takes the errors the
discriminator step itself computed, one forward pass cheaper. In several processes the errors are averaged over
the ranks first, so every rank keeps the same k. k is the loss's state (`extra_state_json`), saved in
every checkpoint, so a resumed run continues with the k it had. As in compare_gan, k is not clipped to [0, 1]
unless ``clip_k`` (the BEGAN paper clips).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.distributed as dist
from torch import nn

import dalle_kit
from dalle_kit import param

from dalle_kit_plugins.gan.infogan import _bn, _init, _side
from dalle_kit_plugins import gan


class BEGANDiscriminator(gan.Discriminator):
    """BEGAN's auto-encoder discriminator as compare_gan builds it; returns minus each image's L1 reconstruction error."""

    name = "began"
    conditioning_layers = ("text_proj",)

    @attrs.frozen
    class Config:
        batchnorm: bool = param(
            False,
            "batch norms on the code and in the decoder (compare_gan's discriminator_batchnorm; "
            "its BEGAN default is false)",
        )
        code_dim: int = param(64, "size of the auto-encoder's code", validator=attrs.validators.gt(0))
        text_embed: int = param(
            64,
            "the text vector is projected to this size and decoded beside the code",
            validator=attrs.validators.gt(0),
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        side, bn = _side(image_size), config.batchnorm
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.Flatten(),
            nn.Linear(128 * side * side, config.code_dim),
            *([_bn(config.code_dim, 1)] if bn else []),
            nn.LeakyReLU(0.2),
        )
        self.text_proj = nn.Linear(text_dim, config.text_embed) if text_dim else None
        inputs = config.code_dim + (config.text_embed if text_dim else 0)
        self.fc = nn.Sequential(
            nn.Linear(inputs, 128 * side * side), *([_bn(128 * side * side, 1)] if bn else []), nn.LeakyReLU(0.2)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            *([_bn(64, 2)] if bn else []),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, channels, 4, 2, 1),
            nn.Sigmoid(),
        )
        self._shape = (128, side, side)
        _init(self)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        code = self.encoder(images)
        if self.text_proj is not None:
            code = torch.cat([code, self.text_proj(text)], dim=1)
        decoded = self.decoder(self.fc(code).view(len(images), *self._shape))
        return -(decoded - (images + 1) / 2).abs().flatten(1).mean(dim=1)


class BEGANLoss(gan.Loss):
    """BEGAN's equilibrium objective on reconstruction errors (the `began` discriminator's logits are minus them)."""

    name = "began"

    @attrs.frozen
    class Config:
        gamma: float = param(
            0.75,
            "the equilibrium ratio err(fake) / err(real) k steers towards (compare_gan's gamma)",
            validator=[attrs.validators.gt(0), attrs.validators.le(1)],
        )
        k_lambda: float = param(0.001, "k's learning rate (compare_gan's lambda)", validator=attrs.validators.ge(0))
        clip_k: bool = param(False, "clip k to [0, 1] as the BEGAN paper does (compare_gan does not)")
        k_update: Literal["after", "during"] = param(
            "after",
            "k moves after each step, from errors the updated networks recompute on its batch (compare_gan), or "
            "during it, from the discriminator step's own errors",
        )

    def __init__(self, config):
        super().__init__(config)
        self.k = 0.0

    @property
    def after_steps(self) -> bool:  # type: ignore[override]
        return self.config.k_update == "after"

    def discriminator_loss(self, real_logits, fake_logits):
        real_err, fake_err = -real_logits.mean(), -fake_logits.mean()
        loss = real_err - self.k * fake_err
        if not self.after_steps:
            self._move_k(real_err, fake_err)
        return loss

    def after_step(self, real_logits, fake_logits):
        self._move_k(-real_logits.mean(), -fake_logits.mean())

    def _move_k(self, real_err: torch.Tensor, fake_err: torch.Tensor) -> None:
        """k's step from the batch's mean errors; in several processes from their mean over the ranks, so that every
        rank keeps the same k (each saw a batch of its own)."""
        errors = torch.stack([real_err.detach().float(), fake_err.detach().float()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(errors)
            errors = errors / dist.get_world_size()
        real, fake = errors.tolist()
        k = self.k + self.config.k_lambda * (self.config.gamma * real - fake)
        self.k = min(max(k, 0.0), 1.0) if self.config.clip_k else k

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()

    def extra_state_json(self) -> dict[str, Any]:
        return {"k": self.k}

    def load_extra_state_json(self, state: dict[str, Any]) -> None:
        self.k = float(state.get("k", 0.0))


@dalle_kit.hookimpl
def register_discriminators(register):
    register(BEGANDiscriminator)


@dalle_kit.hookimpl
def register_losses(register):
    register(BEGANLoss)
