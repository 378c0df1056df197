"""Metric `clip-score`: CLIPScore (Hessel et al. 2021) between each generated image and its prompt.

CLIPScore(image, text) = w * max(cos(E_image, E_text), 0) with w = 100 (torchmetrics' convention; the
paper's w = 2.5 gives the same ranking, 40x smaller). Reported: the mean over the generated images
(``clip_score``), and two sanity numbers on the real reference images: with their own captions
(``clip_score_real``, what a perfect generator would get) and with the captions shuffled
(``clip_score_real_shuffled``, no text alignment). A CLIP that separates these two can judge alignment.

The CLIP is a `clip-pretrain` run (default ``runs/shapes-clip-pretrain``, its newest finished run), a local
open_clip checkpoint or a cached open_clip tag (see `dalle_kit_plugins.clip.models`); random weights are
refused. Images are resized and normalised with the model's preprocessing config. The protocol names the
model and weights source and the sha256 of the weights file.
"""

from __future__ import annotations

import re

from collections.abc import Sequence

import attrs
import torch

import dalle_kit
from dalle_kit import param
from dalle_kit import MetricResult
from dalle_kit_plugins.clip.models import LoadedClip, load_clip, pin_pretrained, preprocess_images, resolve_source

W = 100.0  # CLIPScore's weight w (torchmetrics' CLIPScore uses 100)
BATCH = 250


class ClipScore(dalle_kit.Metric):
    """Mean of 100 * max(cos(image, prompt), 0) under a pre-trained CLIP; plus matched vs shuffled real pairs."""

    name = "clip-score"
    key = "[eval.clip-score]"  # the recipe table, in messages

    @attrs.frozen
    class Config:
        model: str = param("", "open_clip architecture name or JSON config; '' = the run's own (tiny CLIP otherwise)")
        pretrained: str = param(
            "runs/shapes-clip-pretrain",
            "weights: a clip-pretrain run or run-name prefix, "
            "a local open_clip checkpoint file or a cached open_clip tag",
        )

    @classmethod
    def pin(cls, config):
        """A run-name prefix becomes the run directory it means now (recorded in the new run's recipe)."""
        return pin_pretrained(config, key=cls.key)

    def check(self, evaluation) -> None:
        if not self.config.pretrained.strip():
            raise dalle_kit.UserError(
                f"{self.key} pretrained is empty: {self.name} needs trained CLIP weights; set it to a "
                "clip-pretrain run (runs/shapes-clip-pretrain) or a local open_clip checkpoint file"
            )
        resolve_source(self.config.model, self.config.pretrained, key=self.key)

    def clip(self, evaluation) -> LoadedClip:
        key = ("clip", self.config.model, self.config.pretrained)  # one load for every CLIP metric of the evaluation
        if key not in evaluation.shared:
            self.check(evaluation)
            loaded = load_clip(self.config.model, self.config.pretrained, key=self.key)
            loaded.model.to(evaluation.device)
            evaluation.shared[key] = loaded
        return evaluation.shared[key]

    def compute(self, evaluation) -> MetricResult:
        clip = self.clip(evaluation)
        generated = scores(clip, evaluation.generated, evaluation.prompts)
        reference = evaluation.reference
        real = scores(clip, reference.images, reference.captions)
        g = torch.Generator().manual_seed(evaluation.seed)
        order = torch.randperm(len(reference), generator=g)
        shuffled = list(reference.captions)
        for i, j in zip(order.tolist(), order.roll(1).tolist()):  # each image gets another image's caption
            shuffled[i] = reference.captions[j]
        mismatched = scores(clip, reference.images, shuffled)
        values = {
            "clip_score": float(generated.mean()),
            "clip_score_real": float(real.mean()),
            "clip_score_real_shuffled": float(mismatched.mean()),
        }
        details = {
            "w": W,
            "clip_score_std": float(generated.std()) if len(generated) > 1 else 0.0,
            "definition": "mean of w * max(cos(image, text), 0)",
        }
        protocol = evaluation.protocol(extractor=judge(clip, evaluation), weights_hash=clip.weights_hash())
        return MetricResult(values, protocol, details)


OWN_JUDGE = "the CLIP these images were sampled with: not a fair judge"


def judge(clip: LoadedClip, evaluation) -> str:
    """The extractor of a CLIP metric's protocol; it says so when the judge is the CLIP the images were drawn with
    (unCLIP's prior predicts its embeddings, DALL-E re-ranks by it; the pipeline's ``sampling()`` names that run),
    because such images can satisfy the judge without matching their caption."""
    where = clip.source.path if clip.source.kind == "run" else None
    # the whole path, not a prefix of another run's (runs/clip vs runs/clip-2)
    if where is not None and re.search(re.escape(str(where.resolve())) + r"(?=$|[,;\s])", evaluation.sampling):
        return f"{clip.describe()}, {OWN_JUDGE}"
    return clip.describe()


@torch.no_grad()
def scores(clip: LoadedClip, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """w * max(cos, 0) for each (image, caption) pair: uint8 images [N, C, H, W], N captions -> [N] on the CPU."""
    model, cfg = clip.model, clip.preprocess_cfg
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), BATCH):
        x = preprocess_images(images[i : i + BATCH], cfg).to(device)
        tokens = clip.tokenizer(list(captions[i : i + BATCH])).to(device)
        cos = (model.encode_image(x, normalize=True) * model.encode_text(tokens, normalize=True)).sum(dim=1)
        out.append(W * cos.clamp(min=0).float().cpu())
    return torch.cat(out)


@dalle_kit.hookimpl
def register_metrics(register):
    register(ClipScore)
