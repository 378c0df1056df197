"""The diffusion family's objective: the denoising loss of DDPM (Ho et al. 2020), a mean squared error between the
denoiser's output on a noised sample and its target: the noise itself ("epsilon"), the velocity
v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0 ("v_prediction", Salimans & Ho 2022) or the clean sample x0
("sample", as DALL-E 2's prior predicts the CLIP image embedding)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def denoising_loss(
    denoiser: Callable[..., torch.Tensor],
    scheduler,
    real: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    prediction: str,
) -> torch.Tensor:
    """The batch's mean squared error of ``denoiser(x_t, t, text)`` against its target; `scheduler` (a diffusers
    DDPMScheduler) noises `real` to step `t` and gives the velocity."""
    if prediction == "sample":
        target = real
    else:
        target = noise if prediction == "epsilon" else scheduler.get_velocity(real, noise, t)
    return (denoiser(scheduler.add_noise(real, noise, t), t, text) - target).square().mean()
