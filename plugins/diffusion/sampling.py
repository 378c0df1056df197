"""The diffusion family's sampling loop: a diffusers scheduler stepping a denoiser from noise, with
classifier-free guidance (Ho and Salimans 2021), shared by the pipelines that denoise (images, CLIP embeddings)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def image_schedule(base_config, kind: str, steps: int):
    """A DDIM (eta 0) or DPM-Solver++ multistep scheduler for images in [-1, 1], from the training scheduler's config,
    set to `steps` steps. It starts at the last training step ("trailing") and keeps each x0 estimate inside the
    image range (clipping; Imagen's dynamic thresholding); DPM-Solver's lambda clipping is what diffusers prescribes
    for the cosine schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        schedule = DDIMScheduler.from_config(base_config, timestep_spacing="trailing", clip_sample=True)
    else:
        schedule = DPMSolverMultistepScheduler.from_config(
            base_config, timestep_spacing="trailing", thresholding=True, sample_max_value=1.0, lambda_min_clipped=-5.1
        )
    schedule.set_timesteps(steps)
    return schedule


def guided_denoise(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    schedule,
    scale: float,
) -> torch.Tensor:
    """`x` (pure noise) denoised over ``schedule.timesteps`` by ``model(x_t, t, condition)``; with ``scale != 1``
    each step mixes ``uncond + scale * (cond - uncond)`` of the conditional and unconditional predictions (one
    batched pass of both). Deterministic given `x` for DDIM and DPM-Solver."""
    guided = scale != 1
    condition = torch.cat([cond, uncond]) if guided else cond
    for t in schedule.timesteps:
        tt = torch.full((len(condition),), int(t), device=x.device, dtype=torch.long)
        pred = model(torch.cat([x, x]) if guided else x, tt, condition)
        if guided:
            c, u = pred.chunk(2)
            pred = u + scale * (c - u)
        x = schedule.step(pred, t, x).prev_sample
    return x
