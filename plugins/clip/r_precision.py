"""Metric `r-precision`: does each generated image rank its own prompt first among K captions (Xu et al. 2018,
AttnGAN's R-precision with R = 1)?

For every generated image, the candidates are its prompt and K - 1 captions drawn (seeded) from the reference
split's captions that differ from it as the CLIP reads text (its tokenizer lowercases and collapses spaces, so "The
letter K." and "The letter k." are one caption, not a distractor for each other); the CLIP (the same weights sources as `clip-score`) scores each pair
by cosine similarity, and the image counts when its own prompt scores highest (a tie counts against it). With
``expected = true`` each image counts with its probability of ranking first over every draw of the K - 1
distractors (computed exactly, C(b, K-1) / C(M, K-1) for b of its M possible distractors scoring below its own
prompt): the limit of averaging infinitely many seeded draws, free of the draw's noise on small reference sets. Reported:
``r_precision`` on the generated images, ``r_precision_real`` on the reference images with their own captions
(what a perfect generator would get under this CLIP) and ``r_precision_chance`` = 1/K. Captions that differ as text
can still describe the image (a shorter caption of the same picture), so the real images' score is the ceiling to
read it against, not 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch

import dalle_kit
from dalle_kit import MetricResult, param
from dalle_kit_plugins.clip.models import LoadedClip, preprocess_images
from dalle_kit_plugins.clip.score import BATCH, ClipScore, judge


class RPrecision(ClipScore):
    """Share of images whose own prompt the CLIP ranks first among K captions (K - 1 others from the reference)."""

    name = "r-precision"
    key = "[eval.r-precision]"

    @attrs.frozen
    class Config(ClipScore.Config):
        candidates: int = param(
            100, "K: captions ranked per image, its own among them", validator=attrs.validators.gt(1)
        )
        expected: bool = param(
            False, "count each image's probability of ranking first over every draw of distractors, not one draw"
        )

    def check(self, evaluation) -> None:
        """The CLIP's weights (`ClipScore.check`), and K no larger than the reference split's distinct captions:
        refused before a run trains, not after."""
        super().check(evaluation)
        self.pool(evaluation)

    def pool(self, evaluation) -> list[str]:
        """The reference split's distinct captions (one of each group that reads the same), or one line if there are
        fewer than K."""
        k = self.config.candidates
        readings: dict[str, str] = {}
        for caption in sorted(set(evaluation.reference.captions)):
            readings.setdefault(read_as(caption), caption)
        pool = sorted(readings.values())
        if len(pool) < k:
            raise dalle_kit.UserError(
                f"[eval.r-precision] candidates = {k}, but the reference split has only {len(pool)} distinct "
                f"captions; set candidates to at most {len(pool)}"
            )
        return pool

    def compute(self, evaluation) -> MetricResult:
        clip = self.clip(evaluation)
        k = self.config.candidates
        pool = self.pool(evaluation)

        def seeded() -> torch.Generator | None:  # the same distractors for the generated and the real images
            return None if self.config.expected else torch.Generator().manual_seed(evaluation.seed)

        generated = r_precision(clip, evaluation.generated, evaluation.prompts, pool, k, seeded())
        reference = evaluation.reference
        real = r_precision(clip, reference.images, reference.captions, pool, k, seeded())
        values = {
            "r_precision": float(generated.mean()),
            "r_precision_real": float(real.mean()),
            "r_precision_chance": 1.0 / k,
        }
        details = {
            "candidates": k,
            "definition": "own prompt ranked first by CLIP cosine among K captions that read differently",
            "distractors": "expectation over every draw" if self.config.expected else "one draw, seeded",
        }
        protocol = evaluation.protocol(extractor=judge(clip, evaluation), weights_hash=clip.weights_hash())
        return MetricResult(values, protocol, details)


def read_as(caption: str) -> str:
    """`caption` as a CLIP tokenizer reads it: lower case, one space between words (open_clip's tokenizer does both)."""
    return " ".join(caption.lower().split())


@torch.no_grad()
def r_precision(
    clip: LoadedClip,
    images: torch.Tensor,
    captions: Sequence[str],
    pool: list[str],
    k: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """For each uint8 image [N, C, H, W] and its caption: whether the caption outranks K - 1 others drawn with
    `generator` from `pool` (those that read differently from it, `read_as`), or with no generator the probability
    that it does over every such draw -> float [N]."""
    model, cfg = clip.model, clip.preprocess_cfg
    device = next(model.parameters()).device
    texts = sorted(set(pool) | set(captions))
    index = {t: i for i, t in enumerate(texts)}
    text_emb = torch.cat(
        [
            model.encode_text(clip.tokenizer(texts[i : i + BATCH]).to(device), normalize=True)
            for i in range(0, len(texts), BATCH)
        ]
    ).float()
    pool_ids = torch.tensor([index[t] for t in pool])
    reading = {r: i for i, r in enumerate(dict.fromkeys(read_as(t) for t in texts))}
    group = torch.tensor([reading[read_as(t)] for t in texts])
    hits = []
    for start in range(0, len(images), BATCH):
        x = preprocess_images(images[start : start + BATCH], cfg).to(device)
        image_emb = model.encode_image(x, normalize=True).float()
        for row, caption in zip(image_emb, captions[start : start + BATCH]):
            own = index[caption]
            others = pool_ids[group[pool_ids] != group[own]]
            if generator is None:
                below = int(((text_emb[others.to(device)] @ row) < (row @ text_emb[own])).sum())
                hits.append(all_below(below, len(others), k - 1))
                continue
            picked = others[torch.randperm(len(others), generator=generator)[: k - 1]]
            sims = text_emb[picked.to(device)] @ row
            hits.append(float((row @ text_emb[own]) > sims.max()))
    return torch.tensor(hits, dtype=torch.float64)


def all_below(below: int, total: int, drawn: int) -> float:
    """The probability that `drawn` items picked without replacement from `total`, `below` of them marked, are all
    marked: C(below, drawn) / C(total, drawn)."""
    return math.comb(below, drawn) / math.comb(total, drawn)


@dalle_kit.hookimpl
def register_metrics(register):
    register(RPrecision)
