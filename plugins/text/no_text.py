"""Text encoder `none`: no conditioning. Every caption becomes the same empty vector (dimension 0), so a generator
and a discriminator built beside it are unconditional, as the GANs of Lucic et al. 2018 are."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import dalle_kit


class NoText(dalle_kit.TextEncoder):
    """No conditioning: every caption is the empty vector (dimension 0); parts built beside it are unconditional."""

    name = "none"
    dim = 0

    def __init__(self, config=None):
        super().__init__(config)
        self.register_buffer("empty", torch.zeros(0), persistent=False)  # follows .to(): device and dtype

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        return self.empty.new_zeros(len(captions), 0)


@dalle_kit.hookimpl
def register_text_encoders(register):
    register(NoText)
