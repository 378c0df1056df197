"""Text encoder `clip`: the text tower of an open_clip CLIP model (``encode_text``), frozen by default.

The weights come from a `clip-pretrain` run (``pretrained = "runs/shapes-clip-pretrain"``), a local
open_clip checkpoint file or a cached open_clip tag; see `dalle_kit_plugins.clip.models`. The vision
tower is dropped after loading. The state dict is the text tower's (and the logit scale): a pipeline that
checkpoints it restores exactly the weights it trained with, whatever `pretrained` points to later.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

import dalle_kit
from dalle_kit import param

from dalle_kit_plugins.clip.models import load_clip, pin_pretrained


class ClipText(dalle_kit.TextEncoder):
    """open_clip text tower; dim = the model's embed dim. Default: dalle-kit's tiny CLIP, random init."""

    name = "clip"

    @attrs.frozen
    class Config:
        model: str = param("", "open_clip architecture name or JSON config; '' = the run's own (tiny CLIP otherwise)")
        pretrained: str = param(
            "",
            "weights: a clip-pretrain run (runs/shapes-clip-pretrain), a local checkpoint file, "
            "a cached open_clip tag, or '' for random init",
        )
        trainable: bool = param(False, "train the text tower with the discriminator (false: frozen)")
        normalize: bool = param(True, "L2-normalise the vectors, scaled by sqrt(dim) to unit variance per component")

    @classmethod
    def pin(cls, config):
        """A run-name prefix becomes the run directory it means now (recorded in the new run's recipe)."""
        return pin_pretrained(config, key="[text_encoder]")

    def __init__(self, config):
        super().__init__(config)
        loaded = load_clip(config.model, config.pretrained, key="[text_encoder]")
        model = loaded.model
        model.visual = None  # only the text tower is used
        self.clip = model
        self.tokenizer = loaded.tokenizer
        self.source = loaded.describe()
        self.clip.requires_grad_(config.trainable)
        with torch.no_grad():
            self.dim = int(self.clip.encode_text(self.tokenizer([""])).shape[-1])
        self._cache: dict[str, torch.Tensor] = {}  # caption -> vector, only while frozen

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.trainable:
            self.clip.eval()  # frozen: dropout stays off
        return self

    def _vectors(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(captions).to(self.device)
        x = self.clip.encode_text(tokens)
        if self.config.normalize:
            x = torch.nn.functional.normalize(x, dim=-1) * self.dim**0.5
        return x

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        captions = list(captions)
        if self.trainable:
            return self._vectors(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache]
        for i in range(0, len(missing), 256):
            chunk = missing[i : i + 256]
            with torch.no_grad():
                vectors = self._vectors(chunk)
            for caption, vector in zip(chunk, vectors):
                if len(self._cache) < 200_000:
                    self._cache[caption] = vector
        if any(c not in self._cache for c in captions):  # the cache is full: encode the rest directly
            with torch.no_grad():
                return self._vectors(captions)
        return torch.stack([self._cache[c] for c in captions])  # a fresh tensor, even from inference-mode entries

    def _apply(self, fn, *args, **kwargs):
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._cache = {}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


@dalle_kit.hookimpl
def register_text_encoders(register):
    register(ClipText)
