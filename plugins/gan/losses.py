"""Adversarial losses `bce` (non-saturating), `minimax`, `hinge`, `lsgan`, `wgan`, `wgan-gp`, `dragan` and `ragan`.

The losses of bce, minimax, lsgan and ragan take ``r1_gamma``: the R1 regulariser (Mescheder et al. 2018),
gamma/2 * E ||grad_x D(x, t)||^2 on real pairs, added to the discriminator's loss. `wgan-gp` adds its own gradient
penalty on interpolates (Gulrajani et al. 2017), `dragan` one around the real images (Kodali et al. 2017).

Lucic et al. 2018 compare MM GAN (`minimax`), NS GAN (`bce`), LSGAN (`lsgan`), WGAN (`wgan` with ``[train]
d_weight_clip``), WGAN GP (`wgan-gp`), DRAGAN (`dragan`) and BEGAN (`began`, in its own module): their formulas
here follow google/compare_gan's first commit (the study's code); ``pixels = "0..1"`` measures the penalties'
gradient norms in its pixel range (images in [0, 1]; the toolkit's are in [-1, 1], where the norm is half as large).
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import param
from dalle_kit_plugins import gan


def _input_gradient(discriminator, images: torch.Tensor, text: torch.Tensor, of=None) -> torch.Tensor:
    """d(sum of D's logits, or of ``of(logits)``)/d(images), flattened per image, with a graph for the penalty's backward."""
    images = images.detach().requires_grad_(True)
    logits = discriminator(images, text.detach())
    (grad,) = torch.autograd.grad((of(logits) if of else logits).sum(), images, create_graph=True)
    return grad.flatten(1)


PIXELS_DOC = (
    "pixel range the gradient's norm is measured in: '-1..1' (the toolkit's images) or '0..1' (compare_gan's, "
    "Lucic et al. 2018: the norm is twice that in -1..1)"
)


def _slopes(grad: torch.Tensor, pixels: str, eps: float) -> torch.Tensor:
    """Per-image gradient norms in the configured pixel range, sqrt(eps + |g|^2) (compare_gan: eps = 1e-4)."""
    if pixels == "0..1":  # x = 2 * x01 - 1, so d/dx01 = 2 d/dx
        grad = grad * 2
    return (grad.square().sum(1) + eps).sqrt() if eps else grad.norm(2, dim=1)


@attrs.frozen
class RegularisedConfig:
    r1_gamma: float = param(0.0, "weight of the R1 penalty on real images (0: off)", validator=attrs.validators.ge(0))


class _R1(gan.Loss):
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


class Minimax(_R1):
    """The original minimax GAN (Goodfellow et al. 2014; MM GAN in Lucic et al. 2018, GAN_MINMAX in compare_gan): D as in
    `bce`, the generator minimises log(1 - D(G(z))), which saturates when D rejects its samples."""

    name = "minimax"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits):
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(l)) = -softplus(l)


class Hinge(_R1):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): D on max(0, 1 -+ logits), G on -D(G(z))."""

    name = "hinge"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


@attrs.frozen
class LeastSquaresConfig(RegularisedConfig):
    sigmoid: bool = param(
        False,
        "regress D's probability (the sigmoid of its logit) instead of the logit itself, as "
        "compare_gan's LSGAN does (Lucic et al. 2018)",
    )


class LeastSquares(_R1):
    """Least squares (LSGAN, Mao et al. 2017): D regresses real to 1 and fake to 0; G pushes fakes to 1."""

    name = "lsgan"
    Config = LeastSquaresConfig

    def _out(self, logits):
        return torch.sigmoid(logits) if self.config.sigmoid else logits

    def discriminator_loss(self, real_logits, fake_logits):
        return 0.5 * (self._out(real_logits) - 1).square().mean() + 0.5 * self._out(fake_logits).square().mean()

    def generator_loss(self, fake_logits):
        return 0.5 * (self._out(fake_logits) - 1).square().mean()


class Wasserstein(gan.Loss):
    """Wasserstein loss (WGAN, Arjovsky et al. 2017): the critic maximises D(real) - D(fake); keep it Lipschitz with
    ``[train] d_weight_clip`` (the paper's 0.01) and train it ``n_critic`` (5) times per generator step."""

    name = "wgan"

    def discriminator_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


class WassersteinGP(Wasserstein):
    """Wasserstein loss with gradient penalty (WGAN-GP, Gulrajani et al. 2017); use with n_critic > 1 and no batch norm in D."""

    name = "wgan-gp"

    @attrs.frozen
    class Config:
        gp_lambda: float = param(
            10.0,
            "weight of the gradient penalty on real/fake interpolates (compare_gan's lambda)",
            validator=attrs.validators.ge(0),
        )
        pixels: Literal["-1..1", "0..1"] = param("-1..1", PIXELS_DOC)
        eps: float = param(
            0.0, "added under the norm's square root (compare_gan: 1e-4)", validator=attrs.validators.ge(0)
        )

    def penalty(self, discriminator, real, fake, text):
        if not self.config.gp_lambda:
            return None
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
        mixed = alpha * real.detach() + (1 - alpha) * fake.detach()
        grad = _input_gradient(discriminator, mixed, text)
        return self.config.gp_lambda * (_slopes(grad, self.config.pixels, self.config.eps) - 1).square().mean()


class DRAGAN(gan.Loss):
    """DRAGAN (Kodali et al. 2017), as compare_gan has it: the non-saturating loss (`bce`) plus a gradient penalty around
    the real images: x_p = x + 0.5 * std(x) * u, u ~ U[0, 1) per pixel and std over the whole batch; at x + a (x_p - x),
    a ~ U[0, 1) per image, lambda * E (|grad D|_2 - 1)^2, the gradient of D's probability (the sigmoid of its logit)."""

    name = "dragan"

    @attrs.frozen
    class Config:
        gp_lambda: float = param(
            10.0, "weight of the gradient penalty (compare_gan's lambda)", validator=attrs.validators.ge(0)
        )
        pixels: Literal["-1..1", "0..1"] = param("0..1", PIXELS_DOC)
        eps: float = param(
            1e-4, "added under the norm's square root (compare_gan: 1e-4)", validator=attrs.validators.ge(0)
        )

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()

    def penalty(self, discriminator, real, fake, text):
        if not self.config.gp_lambda:
            return None
        real = real.detach()
        noise = torch.rand(real.shape, device=real.device, dtype=real.dtype)
        perturbed = real + 0.5 * real.std(unbiased=False) * noise
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
        grad = _input_gradient(discriminator, real + alpha * (perturbed - real), text, of=torch.sigmoid)
        return self.config.gp_lambda * (_slopes(grad, self.config.pixels, self.config.eps) - 1).square().mean()


class RelativisticAverage(_R1):
    """Relativistic average GAN (Jolicoeur-Martineau 2019, RaSGAN): D rates how much more real a real image is than
    the average fake, and the generator the reverse, so G's loss needs D's logits on real images too."""

    name = "ragan"
    needs_real_logits = True

    def discriminator_loss(self, real_logits, fake_logits):
        return (
            F.softplus(-(real_logits - fake_logits.mean())).mean() + F.softplus(fake_logits - real_logits.mean()).mean()
        )

    def generator_loss(self, fake_logits, real_logits=None):
        if real_logits is None:
            raise ValueError("ragan's generator loss needs the real logits (needs_real_logits = True)")
        return (
            F.softplus(-(fake_logits - real_logits.mean())).mean() + F.softplus(real_logits - fake_logits.mean()).mean()
        )


@dalle_kit.hookimpl
def register_losses(register):
    register(NonSaturatingBCE)
    register(Minimax)
    register(Hinge)
    register(LeastSquares)
    register(Wasserstein)
    register(WassersteinGP)
    register(DRAGAN)
    register(RelativisticAverage)
