"""DALL-E stage 1: the `dvae_codec` kind, its `gumbel-dvae` part and the `dvae` pipeline. A brief shapes run lowers
the held-out reconstruction error and uses many codes, resume is exact, the recipe checks, bad settings are one
line, and a dvae run cannot be sampled from prompts."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import dalle_kit
from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.tools.testing import ConformanceError, check_part
from dalle_kit.trainer import sampler
from dalle_kit_plugins.dalle.codec import DVAECodec, check_codec_contract
from dalle_kit_plugins.dalle.gumbel_dvae import GumbelDVAE
from dalle_kit_plugins.dalle.vq_dvae import VQDVAE

# shapes-dvae made small: fewer images, a narrower codec.
SMALL = [
    "data.train_size=2000",
    "data.test_size=256",
    "codec.width=32",
    "codec.res_blocks=1",
    "train.batch_size=32",
]


def rows(run, kind: str = "train") -> list[dict]:
    return [r for r in run.files.read_metrics() if r["kind"] == kind]


@pytest.mark.unit
@pytest.mark.parametrize("codec", [GumbelDVAE, VQDVAE], ids=lambda c: c.name)
@pytest.mark.parametrize("image_size, downsample", [(16, 2), (32, 4), (64, 8)])
def test_codecs_conform(codec, image_size, downsample):
    config = codec.Config(codebook_size=64, embed_dim=16, width=16, res_blocks=1, downsample=downsample)
    check_part(codec, config, image_size=image_size)
    built = codec(config, image_size=image_size, channels=3)
    assert built.grid == (image_size // downsample,) * 2 and built.vocab_size == 64


@pytest.mark.unit
def test_vq_maintain_seeds_the_codebook_from_the_batch_and_replaces_dead_codes():
    """The first maintain sets every codebook vector to an encoder output of the batch; later, a code nobody picks
    fades below dead_below and is replaced by an encoder output; the same generator gives the same codebook."""
    config = VQDVAE.Config(codebook_size=32, embed_dim=8, width=8, res_blocks=0, usage_decay=0.5, dead_below=0.5)

    def trained(seed: int) -> VQDVAE:
        torch.manual_seed(0)
        codec = VQDVAE(config, image_size=16, channels=3)
        images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        g = torch.Generator().manual_seed(seed)
        codec.maintain(images, generator=g)
        rows = codec.vectors(images).detach()
        assert all((rows - w).abs().sum(1).min() == 0 for w in codec.codebook.weight)  # each one an encoder output
        with torch.no_grad():
            codec.codebook.weight[3] = 1e6  # a code far from everything: never nearest
        for _ in range(4):
            codec.maintain(images, generator=g)
        assert codec.codebook.weight[3].abs().max() < 1e6 and bool(codec.initialised)
        return codec

    a, b = trained(5), trained(5)
    assert torch.equal(a.codebook.weight, b.codebook.weight) and torch.equal(a.usage, b.usage)
    assert not torch.equal(a.codebook.weight, trained(6).codebook.weight)


@pytest.mark.unit
def test_codec_check_catches_a_codec_that_breaks_the_contract():
    class OutOfRange(GumbelDVAE):
        name = "out-of-range"

        def encode(self, images):
            return super().encode(images) + self.vocab_size  # ids past the codebook

    class GlobalNoise(GumbelDVAE):
        name = "global-noise"

        def relaxed(self, images, *, temperature, generator=None):
            return super().relaxed(images, temperature=temperature, generator=None)  # draws from the global RNG

    small = GumbelDVAE.Config(codebook_size=16, embed_dim=8, width=8, res_blocks=0)
    with pytest.raises(ConformanceError, match="outside"):
        check_codec_contract(OutOfRange, small)
    with pytest.raises(ConformanceError, match="global RNG"):
        check_codec_contract(GlobalNoise, small)


@pytest.mark.unit
def test_a_size_the_codec_cannot_take_is_one_line():
    with pytest.raises(dalle_kit.UserError, match=r"\[codec\] downsample = 8 does not divide \[data\] size = 20"):
        GumbelDVAE(GumbelDVAE.Config(downsample=8), image_size=20, channels=3)
    assert issubclass(GumbelDVAE, DVAECodec)


@pytest.mark.unit
def test_schedules_are_cosine_functions_of_the_step():
    cls = get_registry().parts["pipeline"]["dvae"].cls
    dvae = cls(
        cls.Config(temperature_start=1.0, temperature_end=1 / 16, temperature_steps=100, kl_weight=0.5, kl_warmup=10)
    )
    assert dvae.temperature(0) == 1.0 and dvae.temperature(100) == dvae.temperature(500) == 1 / 16
    assert dvae.temperature(50) == pytest.approx((1 + 1 / 16) / 2)
    assert dvae.kl_weight_at(0) == 0.0 and dvae.kl_weight_at(5) == pytest.approx(0.25) and dvae.kl_weight_at(10) == 0.5
    flat = cls(cls.Config(temperature_steps=0, kl_warmup=0, kl_weight=0.5))
    assert flat.temperature(7) == flat.config.temperature_start and flat.kl_weight_at(0) == 0.5


@pytest.mark.slow  # about 150 steps: a minute or more on 2 loaded cores
@pytest.mark.xfail(
    strict=True,
    reason="open: in 150 steps gumbel-dvae reconstructs only the dark background (recon_test plateaus near 0.178, "
    "the constant image's error) and uses 1-10 codes; the codebook collapses (the shipped recipe uses vq-dvae)",
)
def test_brief_run_learns_uses_codes_and_writes_grids(tmp_path):
    run = api.train(
        "shapes-dvae",
        [
            *SMALL,
            'codec.name="gumbel-dvae"',
            "train.steps=150",
            "train.log_every=10",
            "train.checkpoint_every=150",
            "train.temperature_steps=150",
        ],
        runs_dir=tmp_path,
        quiet=True,
    )
    log = rows(run)
    assert [r["step"] for r in log] == list(range(10, 151, 10))
    assert all(math.isfinite(r[k]) for r in log for k in ("loss", "recon", "kl", "recon_test", "code_perplexity"))
    first, last = log[0]["recon_test"], log[-1]["recon_test"]
    assert last < 0.1 < first, f"held-out reconstruction error {first:.4f} at step 10 -> {last:.4f} at step 150"
    assert log[-1]["codes_used"] >= 32, f"only {log[-1]['codes_used']} distinct codes on 256 held-out images"
    assert log[-1]["temperature"] == pytest.approx(run.recipe.train.temperature_end, rel=1e-3)
    grid = Image.open(run.dir / "reconstructions" / "step-00000150.png")
    assert grid.size == (8 * 66 + 2, 2 * 66 + 2)  # 8 held-out images, each at 64 px, above their reconstructions
    with pytest.raises(dalle_kit.UserError, match="draws no images"):
        sampler(Run.open(run.dir, get_registry(), quiet=True))


def brief_vq(tmp_path, steps: int):
    return api.train(
        "shapes-dvae",
        [*SMALL, "train.steps=%d" % steps, "train.log_every=10", "train.checkpoint_every=%d" % steps],
        runs_dir=tmp_path,
        quiet=True,
    )


def test_vq_dvae_reconstruction_improves_in_a_brief_run(tmp_path):
    """The shipped recipe's vq-dvae, made small: 200 steps halve the held-out error of the round trip through the
    tokens (images -> ids -> images) and use more than a handful of codes."""
    run = brief_vq(tmp_path, 200)
    log = rows(run)
    assert [r["step"] for r in log] == list(range(10, 201, 10))
    assert all(math.isfinite(r[k]) for r in log for k in ("loss", "recon", "codebook", "commit", "recon_test"))
    first, last = log[0]["recon_test"], log[-1]["recon_test"]
    assert last < first / 2, f"held-out error through the tokens {first:.4f} at step 10 -> {last:.4f} at step 200"
    assert log[-1]["codes_used"] >= 8, f"{log[-1]['codes_used']} distinct codes on 256 held-out images"
    assert Image.open(run.dir / "reconstructions" / "step-00000200.png").size == (8 * 66 + 2, 2 * 66 + 2)
    with pytest.raises(dalle_kit.UserError, match="draws no images"):
        sampler(Run.open(run.dir, get_registry(), quiet=True))


@pytest.mark.slow  # 600 steps: about 40 s on 2 quiet cores
def test_vq_dvae_learns_a_codebook_in_600_steps(tmp_path):
    log = rows(brief_vq(tmp_path, 600))
    assert log[-1]["recon_test"] < 0.03, log[-1]
    assert log[-1]["codes_used"] >= 128 and log[-1]["code_perplexity"] >= 64, log[-1]


@pytest.mark.parametrize("codec", ["vq-dvae", "gumbel-dvae"])
def test_resume_matches_uninterrupted(tmp_path, codec):
    overrides = [
        *SMALL,
        f'codec.name="{codec}"',
        "codec.codebook_size=64",
        "train.steps=24",
        "train.batch_size=8",
        "train.log_every=4",
        "train.checkpoint_every=8",
        "train.temperature_steps=16",
        "train.kl_warmup=10",
        "train.eval_images=16",
    ]
    full = api.train("shapes-dvae", overrides, runs_dir=tmp_path / "full", quiet=True)
    part = api.train("shapes-dvae", overrides, stop_at=10, runs_dir=tmp_path / "part", quiet=True)
    assert latest_checkpoint(part.checkpoints.folder)[0] == 10
    api.train(resume=part.dir, quiet=True)
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    assert a["step"] == b["step"] == 24
    for key, tensor in a["models"]["codec"].items():
        assert torch.equal(tensor, b["models"]["codec"][key]), f"codec.{key} differs after resume"
    for key, state in a["optim"]["dvae"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optim"]["dvae"]["state"][key][name])
    strip = [{k: v for k, v in r.items() if k != "time"} for r in rows(full)]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in rows(part)]
    grids = sorted(p.name for p in (part.dir / "reconstructions").glob("*.png"))
    assert grids == ["step-00000008.png", "step-00000010.png", "step-00000016.png", "step-00000024.png"]


@pytest.mark.unit
def test_shipped_recipe_checks(run_cli):
    code, out, err = run_cli("recipe", "check", "shapes-dvae")
    assert code == 0, err


@pytest.mark.unit
@pytest.mark.parametrize(
    "setting, needle",
    [
        ("train.temperature_end=2.0", "temperature_end"),
        ("codec.downsample=3", "downsample"),
        ("codec.downsample=64", "downsample = 64 does not divide [data] size = 32"),
        ("train.kl_weight=-1", "kl_weight"),
        ('eval.metrics=["fid"]', "draws no images"),
    ],
)
def test_a_bad_setting_is_one_line(run_cli, setting, needle):
    code, out, err = run_cli("recipe", "check", "shapes-dvae", "--set", setting)
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1, err
