"""Losses `bce` (non-saturating) and `hinge`."""

from __future__ import annotations

import torch.nn.functional as F

import dalle_kit


class NonSaturatingBCE(dalle_kit.Loss):
    """Binary cross-entropy on logits; the generator maximises log D(G(z)) (Goodfellow et al. 2014)."""

    name = "bce"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()


class Hinge(dalle_kit.Loss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): D on max(0, 1 -+ logits), G on -D(G(z))."""

    name = "hinge"

    def discriminator_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


@dalle_kit.hookimpl
def register_losses(register):
    register(NonSaturatingBCE)
    register(Hinge)
