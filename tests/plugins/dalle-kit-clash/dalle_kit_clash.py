"""A plugin that registers a name the built-ins already use, and one new part that must still arrive."""

import dalle_kit
from dalle_kit_plugins import gan


class Dcgan(gan.Loss):
    """Pretends to be a loss called dcgan: allowed (names are unique per kind)."""

    name = "dcgan"

    def discriminator_loss(self, real_logits, fake_logits):
        return (1 - real_logits).relu().mean() + (1 + fake_logits).relu().mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


class Hinge(Dcgan):
    """Clashes with the built-in loss 'hinge'."""

    name = "hinge"


@dalle_kit.hookimpl
def register_losses(register):
    register(Hinge)
    register(Dcgan)
