"""Best-of-N re-ranking, shared by the families that draw several candidates and keep the one a judge prefers (a
GAN's discriminator, DALL-E's CLIP)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def best_of(n: int, draw: Callable[[], Tensor], rate: Callable[[Tensor], Tensor]) -> Tensor:
    """`n` calls of ``draw() -> images [B, ...]``; for each of the B positions, the image whose ``rate(images) -> [B]``
    is highest (the first on a tie). ``n = 1`` draws once and rates nothing."""
    best = draw()
    if n == 1:
        return best
    score = rate(best)
    for _ in range(n - 1):
        images = draw()
        rating = rate(images)
        better = rating > score
        best = torch.where(better.view(-1, *[1] * (best.ndim - 1)), images, best)
        score = torch.where(better, rating, score)
    return best
