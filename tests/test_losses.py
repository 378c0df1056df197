"""The losses' regularisers compute what they claim, checked against closed forms on a linear discriminator."""

from __future__ import annotations

import pytest
import torch

from dalle_kit.registry import Registry
from dalle_kit_plugins.gan.kinds import LinearJudge as _LinearJudge

LOSSES = Registry.discover(select="").parts["loss"]


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, 3, 8, 8, generator=g) * 2 - 1,
        torch.rand(n, 3, 8, 8, generator=g) * 2 - 1,
        torch.randn(n, 16, generator=g),
    )


@pytest.mark.parametrize("name", ["bce", "hinge", "lsgan"])
def test_r1_is_half_gamma_times_squared_input_gradient(name):
    cls = LOSSES[name].cls
    judge = _LinearJudge()
    real, fake, text = batch()
    assert cls(cls.Config()).penalty(judge, real, fake, text) is None  # off by default
    value = cls(cls.Config(r1_gamma=4.0)).penalty(judge, real, fake, text)
    expected = 0.5 * 4.0 * judge.weight.detach().square().sum()  # grad_x <w, x> = w for every image
    assert torch.allclose(value, expected)


@pytest.mark.parametrize("scale, expected", [(1.0, 0.0), (2.0, 10.0), (0.5, 2.5)])
def test_wgan_gp_penalises_gradient_norms_away_from_one(scale, expected):
    cls = LOSSES["wgan-gp"].cls
    judge = _LinearJudge()
    with torch.no_grad():
        judge.weight.copy_(judge.weight / judge.weight.norm() * scale)
    real, fake, text = batch()
    value = cls(cls.Config(gp_lambda=10.0)).penalty(judge, real, fake, text)
    assert value.item() == pytest.approx(expected, abs=1e-4)


def test_wgan_and_lsgan_values():
    w, ls = LOSSES["wgan-gp"].cls(LOSSES["wgan-gp"].cls.Config()), LOSSES["lsgan"].cls(LOSSES["lsgan"].cls.Config())
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert w.discriminator_loss(real, fake).item() == pytest.approx(0.0 - 3.0)
    assert ls.discriminator_loss(real, fake).item() == pytest.approx(0.5 * (1 + 9) / 2 + 0.5 * 1.0)
    assert ls.generator_loss(fake).item() == pytest.approx(0.5 * (0 + 4) / 2)


def test_ragan_values_and_training_gets_real_logits(tiny_recipe, tmp_path, monkeypatch):
    """RaSGAN's closed form; and the gan pipeline hands its generator loss D's logits on the batch's real images."""
    import math

    from dalle_kit import api
    from dalle_kit_plugins.gan.losses import RelativisticAverage

    ra = RelativisticAverage(RelativisticAverage.Config())
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])  # means 3 and 0

    def sp(x):
        return math.log1p(math.exp(x))

    d = (sp(-(2 - 0)) + sp(-(4 - 0))) / 2 + (sp(1 - 3) + sp(-1 - 3)) / 2
    g = (sp(-(1 - 3)) + sp(-(-1 - 3))) / 2 + (sp(2 - 0) + sp(4 - 0)) / 2
    assert ra.discriminator_loss(real, fake).item() == pytest.approx(d)
    assert ra.generator_loss(fake, real).item() == pytest.approx(g)
    seen = []
    original = RelativisticAverage.generator_loss

    def spy(self, fake_logits, real_logits=None):
        seen.append((fake_logits.shape, None if real_logits is None else real_logits.shape))
        return original(self, fake_logits, real_logits)

    monkeypatch.setattr(RelativisticAverage, "generator_loss", spy)
    run = api.train(
        str(tiny_recipe),
        ["loss.name=ragan", "train.steps=4", "train.matching_aware=true", "sample.every=0"],
        runs_dir=tmp_path / "runs",
        quiet=True,
    )
    assert seen == [(torch.Size([32]), torch.Size([32]))] * 4
    rows = [r for r in run.files.read_metrics() if r.get("kind") == "train"]
    assert rows and all(math.isfinite(r["loss_g"]) for r in rows)
