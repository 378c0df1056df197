"""The GAN family: its kinds (generator, discriminator, adversarial loss: `kinds`), networks, losses and the `gan`
pipeline. Plugin authors subclass the kinds from here: ``from dalle_kit_plugins.gan import Generator``."""

from dalle_kit_plugins.gan.kinds import Discriminator, Generator, Loss, prior_sampler

__all__ = ["Discriminator", "Generator", "Loss", "prior_sampler"]
