"""d-roc-auc: the rank formula, and the metric with a discriminator that can and one that cannot tell."""

from __future__ import annotations

import pytest
import torch

import dalle_kit
from dalle_kit.evaluation import Evaluation
from dalle_kit.tools.evaluate import compute_metrics
from dalle_kit_plugins.metrics.discriminator_auc import DiscriminatorROCAUC, roc_auc
from dalle_kit_plugins.data.shapes import Shapes


def test_roc_auc_is_the_pairwise_probability_with_half_ties():
    g = torch.Generator().manual_seed(0)
    positive = torch.randint(0, 6, (37,), generator=g).float()  # many ties
    negative = torch.randint(0, 6, (23,), generator=g).float() - 1
    diff = positive[:, None] - negative[None, :]
    expected = ((diff > 0).double().sum() + 0.5 * (diff == 0).double().sum()) / diff.numel()
    assert roc_auc(positive, negative) == pytest.approx(float(expected), abs=1e-12)
    assert roc_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0


@pytest.fixture(scope="module")
def shapes():
    return Shapes(Shapes.Config(train_size=64, test_size=64))


def darkness_critic():
    """Logit = minus the mean pixel value: real shapes lie on dark backgrounds; it sees nothing else."""

    def judge(images, captions):
        assert images.min() >= -1 and images.max() <= 1 and len(captions) == len(images)
        return -images.mean(dim=(1, 2, 3))

    return judge, "darkness", "0" * 64


def test_d_roc_auc_separates_what_the_critic_sees(shapes, tmp_path):
    test = shapes.load("test")
    n = 32
    metric = {"d-roc-auc": DiscriminatorROCAUC(DiscriminatorROCAUC.Config())}

    inverted = 255 - test.images[:n]  # bright backgrounds
    evaluation = Evaluation(
        shapes,
        num_samples=n,
        generated=inverted,
        prompts=test.captions[:n],
        critic=darkness_critic,
        cache_root=tmp_path,
    )
    result = compute_metrics(evaluation, metric)["d-roc-auc"]
    assert result.values["d_roc_auc"] == 1.0
    assert result.protocol.extractor == "darkness" and result.protocol.n_reference == n

    same = Evaluation(
        shapes,
        num_samples=n,
        generated=test.images[:n].clone(),
        prompts=test.captions[:n],
        critic=darkness_critic,
        cache_root=tmp_path,
    )
    assert compute_metrics(same, metric)["d-roc-auc"].values["d_roc_auc"] == pytest.approx(0.5)


def test_d_roc_auc_needs_a_discriminator(shapes, tmp_path):
    test = shapes.load("test")
    evaluation = Evaluation(
        shapes, num_samples=4, generated=test.images[:4], prompts=test.captions[:4], cache_root=tmp_path
    )
    with pytest.raises(dalle_kit.UserError, match="no discriminator"):
        compute_metrics(evaluation, {"d-roc-auc": DiscriminatorROCAUC(DiscriminatorROCAUC.Config())})
