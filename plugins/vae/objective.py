"""The vae family's objective: the negative evidence lower bound with a weighted KL term (beta-VAE, Higgins et al.
2017): a Gaussian decoder's squared error summed over pixels, plus beta times KL(q(z|x, text) || N(0, I))."""

from __future__ import annotations

import torch


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in nats."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def negative_elbo(
    recon: torch.Tensor, real: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction error, KL), each a batch mean: the squared error summed over a row's pixels and the
    KL of the row's posterior, the loss their sum with the KL weighted by `beta`."""
    error = (recon - real).square().flatten(1).sum(dim=1).mean()
    kl = kl_to_standard_normal(mu, logvar).mean()
    return error + beta * kl, error, kl
