"""The diffusion family: the `diffusion` pipeline on diffusers."""
