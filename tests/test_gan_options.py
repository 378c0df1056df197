"""The `gan` pipeline's training options: n_critic, EMA, lr decay, DiffAugment, bf16, weight clipping, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import Trainer
from dalle_kit_plugins.gan.diffaugment import color, cutout, diff_augment, translation

EVERYTHING = [
    "train.n_critic=2",
    "train.ema=0.9",
    "train.ema_start=3",
    'train.lr_decay="linear"',
    'train.diffaugment=["color", "translation", "cutout"]',
    "train.grad_clip=1.0",
    "train.matching_aware=true",
    "train.mode_seeking=1.0",
    "sample.every=0",
]


def final_state(run) -> dict:
    return load_state(latest_checkpoint(run.checkpoints.folder)[1])


def train_rows(run) -> list[dict]:
    return [r for r in run.files.read_metrics() if r["kind"] == "train"]


def test_all_options_train_and_resume_exactly(tiny_recipe, tmp_path, run_cli):
    full = api.train(str(tiny_recipe), EVERYTHING, runs_dir=tmp_path / "full", quiet=True)
    part = api.train(str(tiny_recipe), EVERYTHING, stop_at=13, runs_dir=tmp_path / "part", quiet=True)
    code, _, err = run_cli("run", "--resume", part.dir, "-q")
    assert code == 0, err
    a, b = final_state(full), final_state(part)
    assert set(a["models"]) == {"generator", "generator_ema", "discriminator", "text_encoder"}
    for net, tensors in a["models"].items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, b["models"][net][key]), (net, key)
    rows = train_rows(full)
    assert rows == [
        {**r, "time": rows[i]["time"]} for i, r in enumerate(train_rows(Run.open(part.dir, get_registry())))
    ]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)
    assert all(math.isfinite(r["ms_ratio"]) and r["ms_ratio"] > 0 for r in rows)  # the mode-seeking term ran
    # linear decay: the lr of step s (1-based) is lr * (1 - (s - 1) / steps)
    assert rows[-1]["lr"] == pytest.approx(2e-4 * (1 - 29 / 30))
    assert rows[0]["lr"] == pytest.approx(2e-4 * (1 - 4 / 30))
    # the average differs from the raw generator, and samples come from the average
    ema = {k[len("module.") :]: v for k, v in a["models"]["generator_ema"].items() if k.startswith("module.")}
    assert any(not torch.equal(ema[k], v) for k, v in a["models"]["generator"].items() if v.is_floating_point())
    pipeline = full.recipe.pipeline.info.cls(full.recipe.train)
    parts = Trainer.restore(Run.open(full.dir, get_registry(), quiet=True), pipeline).drawing_modules
    for key, tensor in parts["generator"].state_dict().items():
        assert torch.equal(tensor, ema[key]), key


def test_same_seed_same_weights_on_cpu(tiny_recipe, tmp_path):
    overrides = ["train.steps=8", "sample.every=0", 'train.diffaugment=["translation"]', "train.n_critic=2"]
    a = final_state(api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "a", quiet=True))
    b = final_state(api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "b", quiet=True))
    c = final_state(api.train(str(tiny_recipe), [*overrides, "seed=1"], runs_dir=tmp_path / "c", quiet=True))
    g = "generator"
    assert all(torch.equal(t, b["models"][g][k]) for k, t in a["models"][g].items())
    assert not all(torch.equal(t, c["models"][g][k]) for k, t in a["models"][g].items())


def _noise_spread(run) -> float:
    """Mean L1 distance between two images of the same prompt drawn with different noise (training-mode batch norm)."""
    parts = Trainer.restore(run, run.recipe.pipeline.info.cls(run.recipe.train)).drawing_modules
    encoder, generator = parts["text_encoder"], parts["generator"]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        text = encoder(["a red circle"] * 16)
        z1, z2 = generator.sample_latent(16, g, "cpu"), generator.sample_latent(16, g, "cpu")
        return (generator(z1, text) - generator(z2, text)).abs().mean().item()


def test_mode_seeking_makes_noise_matter(tiny_recipe, tmp_path):
    overrides = ["train.steps=12", "sample.every=0", "train.lr=1e-3"]
    off = api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "off", quiet=True)
    on = api.train(str(tiny_recipe), [*overrides, "train.mode_seeking=1.0"], runs_dir=tmp_path / "on", quiet=True)
    assert "ms_ratio" not in train_rows(off)[-1]
    ratios = [r["ms_ratio"] for r in train_rows(on)]
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios)
    assert _noise_spread(Run.open(on.dir, get_registry(), quiet=True)) > 1.5 * _noise_spread(
        Run.open(off.dir, get_registry(), quiet=True)
    )


def test_wgan_weight_clipping_and_bf16(tiny_recipe, tmp_path):
    overrides = [
        "train.steps=6",
        "sample.every=0",
        'loss.name="wgan-gp"',
        "loss.gp_lambda=0.0",
        "train.d_weight_clip=0.01",
        "train.n_critic=3",
        'discriminator.norm="none"',
        'train.precision="bf16"',
        "train.lr=5e-5",
        "train.betas=[0.0, 0.9]",
    ]
    run = api.train(str(tiny_recipe), overrides, runs_dir=tmp_path, quiet=True)
    d = final_state(run)["models"]["discriminator"]
    assert max(t.abs().max().item() for t in d.values() if t.is_floating_point()) <= 0.01 + 1e-9
    assert all(math.isfinite(r["loss_d"]) for r in train_rows(run))


def test_diffaugment_policies():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    rng = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for fn in (color, translation, cutout):
        y = fn(x, rng())
        assert y.shape == x.shape and not torch.equal(y, x)
        assert torch.equal(y, fn(x, rng())), "the same generator state gives the same augmentation"
    # translation moves content and pads with zeros; cutout zeroes a quarter of the image (a 8x8 square, clipped)
    moved = translation(x, rng())
    assert (moved == 0).float().mean() > 0
    cut = cutout(torch.ones(6, 3, 16, 16), rng())
    assert 0.05 <= (cut == 0).float().mean() <= 0.25 + 1e-6
    # differentiable: gradients reach the input
    x.requires_grad_(True)
    diff_augment(x, ["color", "translation", "cutout"], rng()).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_policy_is_one_line(tiny_recipe, run_cli):
    code, _, err = run_cli("recipe", "check", tiny_recipe, "--set", 'train.diffaugment=["flip"]')
    assert code == 2 and len(err.strip().splitlines()) == 1 and "diffaugment" in err


def test_fast_profile_trains_and_resumes_exactly(tiny_recipe, tmp_path, run_cli, monkeypatch):
    # Spectral-norm D (the default): real, fake and mismatched images go through D in one call.
    import dalle_kit_plugins.gan.pipeline as gan

    calls = []
    monkeypatch.setattr(gan, "has_bf16", lambda device: calls.append(device) or True)  # bf16 on any CPU for the test
    overrides = ['train.profile="fast"', "train.matching_aware=true", "sample.every=0", "train.steps=12"]
    full = api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "full", quiet=True)
    part = api.train(str(tiny_recipe), overrides, stop_at=5, runs_dir=tmp_path / "part", quiet=True)
    code, _, err = run_cli("run", "--resume", part.dir, "-q")
    assert code == 0, err
    a, b = final_state(full), final_state(part)
    for net, tensors in a["models"].items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, b["models"][net][key]), (net, key)
    assert calls  # the profile asked whether bf16 is native
    standard = final_state(api.train(str(tiny_recipe), overrides[1:], runs_dir=tmp_path / "standard", quiet=True))
    g = "generator"
    assert not all(
        torch.equal(t, standard["models"][g][k]) for k, t in a["models"][g].items()
    )  # another profile, other numbers
    assert all(math.isfinite(r["loss_d"]) for r in train_rows(full))


def test_fast_profile_keeps_two_passes_for_a_batch_norm_discriminator(tiny_recipe, tmp_path, monkeypatch):
    from dalle_kit_plugins.gan.dcgan import DCGANDiscriminator

    batches = []
    real_forward = DCGANDiscriminator.forward
    monkeypatch.setattr(
        DCGANDiscriminator, "forward", lambda self, x, t: batches.append(len(x)) or real_forward(self, x, t)
    )
    overrides = ['train.profile="fast"', "sample.every=0", "train.steps=1", "train.checkpoint_every=1"]
    api.train(str(tiny_recipe), [*overrides, 'discriminator.norm="batch"'], runs_dir=tmp_path / "bn", quiet=True)
    assert batches[:2] == [32, 32]  # real, then fake: batch statistics never mix them
    batches.clear()
    api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "sn", quiet=True)
    assert batches[0] == 64


def test_dcgan_latent_codes_end_z_with_a_uniform_one_hot():
    """latent_codes = K: z is Gaussian noise then a one-hot of one of K values; 0, the default, leaves z plain
    Gaussian, drawn exactly as before."""
    from dalle_kit.tools.testing import check_part
    from dalle_kit_plugins.gan.dcgan import DCGANGenerator

    config = DCGANGenerator.Config(latent_dim=8, ngf=8, text_embed=4, latent_codes=5)
    generator = DCGANGenerator(config, text_dim=6, image_size=16, channels=3)
    z = generator.sample_latent(400, torch.Generator().manual_seed(0))
    assert generator.latent_dim == 13 and z.shape == (400, 13)
    codes = z[:, 8:]
    assert ((codes == 0) | (codes == 1)).all() and (codes.sum(1) == 1).all()
    counts = codes.sum(0)
    assert counts.min() > 50  # every value drawn, about 80 times each
    assert generator(z[:4], torch.randn(4, 6)).shape == (4, 3, 16, 16)
    check_part(DCGANGenerator, config)

    plain = DCGANGenerator(DCGANGenerator.Config(latent_dim=8, ngf=8), text_dim=6, image_size=16, channels=3)
    assert torch.equal(
        plain.sample_latent(4, torch.Generator().manual_seed(1)),
        torch.randn(4, 8, generator=torch.Generator().manual_seed(1)),
    )


@pytest.mark.unit
def test_rerank_keeps_the_draw_the_discriminator_rates_most_real():
    """prior_sampler with a judge and candidates=k: each prompt's image is, of its k draws (taken from the rng in
    turn), the one the judge scores highest for that prompt; candidates=1 draws exactly as without a judge."""
    from dalle_kit_plugins.gan.dcgan import DCGANDiscriminator, DCGANGenerator
    from dalle_kit_plugins.gan.kinds import prior_sampler

    class Words(torch.nn.Module):
        def forward(self, prompts):
            return torch.stack([torch.full((6,), float(len(p))) for p in prompts])

    generator = DCGANGenerator(DCGANGenerator.Config(latent_dim=8, ngf=8), text_dim=6, image_size=16, channels=3)
    judge = DCGANDiscriminator(DCGANDiscriminator.Config(ndf=8), text_dim=6, image_size=16, channels=3)
    prompts = ["a red circle", "a blue square in the top left", "a green triangle"]
    plain = prior_sampler(Words(), generator, "cpu")(prompts, torch.Generator().manual_seed(3))
    one = prior_sampler(Words(), generator, "cpu", judge=judge, candidates=1)(prompts, torch.Generator().manual_seed(3))
    assert torch.equal(plain, one)

    best = prior_sampler(Words(), generator, "cpu", judge=judge, candidates=4)(
        prompts, torch.Generator().manual_seed(3)
    )
    rng = torch.Generator().manual_seed(3)
    text = Words()(prompts)
    with torch.inference_mode():
        draws = torch.stack([generator(generator.sample_latent(3, rng), text) for _ in range(4)])  # [4, 3, C, H, W]
        ratings = torch.stack([judge(d, text).flatten() for d in draws])  # [4, 3]
    winners = ratings.argmax(0)
    assert winners.tolist() != [0, 0, 0]  # re-ranking chose a later draw somewhere: the test can fail
    assert torch.equal(best, draws[winners, torch.arange(3)])

    # the pipeline states the re-ranking, and every score's protocol line carries it
    from dalle_kit import Protocol
    from dalle_kit_plugins.gan.pipeline import GAN

    assert GAN(GAN.Config()).sampling() == ""
    assert GAN(GAN.Config(rerank=4)).sampling() == "best of 4 draws by the discriminator"
    protocol = Protocol(10, 10, "test", "probe", "", 0, sampling=GAN(GAN.Config(rerank=4)).sampling())
    assert protocol.line().endswith(", sampling=best of 4 draws by the discriminator")
