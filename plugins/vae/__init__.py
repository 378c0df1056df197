"""The VAE family: the `vae` pipeline and its decoder."""
