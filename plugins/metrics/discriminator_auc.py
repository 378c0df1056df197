"""Metric `d-roc-auc`: how well the run's discriminator tells held-out real images from generated ones.

Real: the first ``n_reference`` images of the test split, each with its own caption. Generated: the
evaluation's samples with the prompts they were drawn for. The score is the area under the ROC
curve of the discriminator's logits (real = positive), computed exactly from ranks (ties count one
half): 0.5 means the discriminator cannot tell them apart, 1.0 that it always can. Needs a pipeline
that offers ``critic(run)``, a function ``(images in [-1, 1], captions) -> logits`` (the `gan` pipeline's
discriminator).
"""

from __future__ import annotations

import torch

import dalle_kit
from dalle_kit import MetricResult

BATCH = 256


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(equal): the Mann-Whitney form of ROC-AUC."""
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("ROC-AUC needs at least one positive and one negative score")
    scores = torch.cat([positive, negative]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Average the ranks of tied scores.
    unique, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    if len(unique) < len(scores):
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    n_pos, n_neg = len(positive), len(negative)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _scores(judge, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    out = []
    for i in range(0, len(images), BATCH):
        batch = dalle_kit.to_float_images(images[i : i + BATCH])
        logits = judge(batch, captions[i : i + BATCH])
        out.append(torch.as_tensor(logits).float().reshape(-1).cpu())
    scores = torch.cat(out)
    if len(scores) != len(images) or not torch.isfinite(scores).all():
        raise ValueError(
            "the discriminator returned a logit count that does not match the images, or non-finite logits"
        )
    return scores


class DiscriminatorROCAUC(dalle_kit.Metric):
    """The discriminator's ROC-AUC, real test images (with their captions) vs generated ones (with their prompts)."""

    name = "d-roc-auc"

    def compute(self, evaluation) -> MetricResult:
        try:
            judge, label, weights_hash = evaluation.critic()
        except dalle_kit.UserError as exc:  # the core says "no critic"; this metric's critic is a discriminator
            raise dalle_kit.UserError(f"d-roc-auc: no discriminator to score with ({exc})") from None
        real = evaluation.reference
        real_scores = _scores(judge, real.images, real.captions)
        fake_scores = _scores(judge, evaluation.generated, evaluation.prompts)
        values = {"d_roc_auc": roc_auc(real_scores, fake_scores)}
        details = {"mean_logit_real": float(real_scores.mean()), "mean_logit_generated": float(fake_scores.mean())}
        return MetricResult(values, evaluation.protocol(extractor=label, weights_hash=weights_hash), details)


@dalle_kit.hookimpl
def register_metrics(register):
    register(DiscriminatorROCAUC)
