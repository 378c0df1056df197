"""The GAN family: its kinds (generator, discriminator, adversarial loss), networks, losses and the `gan` pipeline."""
