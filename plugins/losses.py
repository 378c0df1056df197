"""Adversarial losses `bce` (non-saturating), `hinge`, `lsgan`, `wgan-gp` and `ragan`, with an optional R1 penalty.

Every loss takes ``r1_gamma``: the R1 regulariser (Mescheder et al. 2018), gamma/2 * E ||grad_x D(x, t)||^2
on real pairs, added to the discriminator's loss. `wgan-gp` adds its own gradient penalty on
interpolates (Gulrajani et al. 2017).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import param


def _input_gradient(discriminator, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    images = images.detach().requires_grad_(True)
    logits = discriminator(images, text.detach())
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return grad.flatten(1)


@attrs.frozen
class RegularisedConfig:
    r1_gamma: float = param(0.0, "weight of the R1 penalty on real images (0: off)", validator=attrs.validators.ge(0))


class _R1(dalle_kit.Loss):
    Config = RegularisedConfig

    def penalty(self, discriminator, real, fake, text):
        if not self.config.r1_gamma:
            return None
        return 0.5 * self.config.r1_gamma * _input_gradient(discriminator, real, text).square().sum(1).mean()


class NonSaturatingBCE(_R1):
    """Binary cross-entropy on logits; the generator maximises log D(G(z)) (Goodfellow et al. 2014)."""

    name = "bce"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()


class Hinge(_R1):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): D on max(0, 1 -+ logits), G on -D(G(z))."""

    name = "hinge"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


class LeastSquares(_R1):
    """Least squares (LSGAN, Mao et al. 2017): D regresses real to 1 and fake to 0; G pushes fakes to 1."""

    name = "lsgan"

    def discriminator_loss(self, real_logits, fake_logits):
        return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()

    def generator_loss(self, fake_logits):
        return 0.5 * (fake_logits - 1).square().mean()


class WassersteinGP(dalle_kit.Loss):
    """Wasserstein loss with gradient penalty (WGAN-GP, Gulrajani et al. 2017); use with n_critic > 1 and no batch norm in D."""

    name = "wgan-gp"

    @attrs.frozen
    class Config:
        gp_lambda: float = param(10.0, "weight of the gradient penalty on real/fake interpolates", validator=attrs.validators.ge(0))

    def discriminator_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()

    def penalty(self, discriminator, real, fake, text):
        if not self.config.gp_lambda:
            return None
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
        mixed = alpha * real.detach() + (1 - alpha) * fake.detach()
        grad = _input_gradient(discriminator, mixed, text)
        return self.config.gp_lambda * (grad.norm(2, dim=1) - 1).square().mean()


class RelativisticAverage(_R1):
    """Relativistic average GAN (Jolicoeur-Martineau 2019, RaSGAN): D rates how much more real a real image is than
    the average fake, and the generator the reverse, so G's loss needs D's logits on real images too."""

    name = "ragan"
    needs_real_logits = True

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-(real_logits - fake_logits.mean())).mean() + F.softplus(fake_logits - real_logits.mean()).mean()

    def generator_loss(self, fake_logits, real_logits=None):
        if real_logits is None:
            raise ValueError("ragan's generator loss needs the real logits (needs_real_logits = True)")
        return F.softplus(-(fake_logits - real_logits.mean())).mean() + F.softplus(real_logits - fake_logits.mean()).mean()


@dalle_kit.hookimpl
def register_losses(register):
    register(NonSaturatingBCE)
    register(Hinge)
    register(LeastSquares)
    register(WassersteinGP)
    register(RelativisticAverage)
