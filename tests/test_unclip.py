"""DALL-E 2 (unCLIP): the embedding prior's kind and part, the prior learns which embedding a text asks for, and the
`unclip` pipeline on a tiny clip-pretrain run (trains, resumes exactly, samples, draws variations of an image)."""

from __future__ import annotations

from types import SimpleNamespace

import attrs
import pytest
import torch
from PIL import Image

from conftest import TINY_CLIP

import dalle_kit
from dalle_kit import api
from dalle_kit.tools.sample import sample as draw_grid
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.tools.testing import ConformanceError, check_part
from dalle_kit_plugins.clip.models import load_clip
from dalle_kit_plugins.clip.score import OWN_JUDGE, judge
from dalle_kit_plugins.diffusion.objective import denoising_loss
from dalle_kit_plugins.diffusion.sampling import guided_denoise
from dalle_kit_plugins.unclip.pipeline import UnCLIP, embedding_schedule
from dalle_kit_plugins.unclip.prior import EmbeddingPrior, MLPPrior, check_prior

SMALL = [
    "data.train_size=256",
    "data.test_size=64",
    "prior.width=32",
    "prior.depth=1",
    "denoiser.channels=[8, 16]",
    "train.steps=8",
    "train.batch_size=8",
    "train.warmup=2",
    "train.ema_start=2",
    "train.log_every=4",
    "train.checkpoint_every=4",
    "train.sample_steps=2",
    "train.prior_steps=2",
    "sample.every=0",
    "eval.metrics=[]",
]


@pytest.mark.unit
@pytest.mark.parametrize("dim", [16, 33])
def test_the_mlp_prior_conforms(dim):
    check_part(MLPPrior, MLPPrior.Config(width=32, depth=2))
    prior = MLPPrior(MLPPrior.Config(width=32, depth=1), dim=dim)
    out = prior(torch.randn(3, dim), torch.tensor([0, 5, 999]), torch.randn(3, dim))
    assert out.shape == (3, dim) and issubclass(MLPPrior, EmbeddingPrior)


@pytest.mark.unit
def test_the_prior_check_catches_a_prior_that_ignores_the_text():
    class Deaf(MLPPrior):
        name = "deaf"

        def forward(self, noisy, timesteps, text):
            return super().forward(noisy, timesteps, torch.zeros_like(text))

    with pytest.raises(ConformanceError, match="text embedding does not change"):
        check_prior(Deaf, MLPPrior.Config(width=16, depth=1))


@pytest.mark.unit
def test_the_prior_learns_which_embedding_each_text_asks_for():
    """Two texts, each paired with its own image embedding: after training on the unCLIP prior's objective (predict
    the clean embedding), DDIM sampling from noise lands next to the right embedding for each text."""
    torch.manual_seed(0)
    dim = 8
    texts, targets = torch.randn(2, dim), torch.nn.functional.normalize(torch.randn(2, dim), dim=-1) * dim**0.5
    prior = MLPPrior(MLPPrior.Config(width=64, depth=2), dim=dim)
    pipeline = UnCLIP(UnCLIP.Config(timesteps=100, prior_steps=10))
    scheduler = pipeline.noise_scheduler("sample")
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        pick = torch.randint(2, (32,), generator=g)
        noise, t = torch.randn(32, dim, generator=g), torch.randint(100, (32,), generator=g)
        loss = denoising_loss(prior, scheduler, targets[pick], noise, t, texts[pick], "sample")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = torch.randn(6, dim, generator=g)
        drawn = guided_denoise(
            prior.eval(), z, texts.repeat(3, 1), texts.repeat(3, 1), embedding_schedule(scheduler.config, 10), 1.0
        )
    nearest = torch.cdist(drawn, targets).argmin(1)
    assert nearest.tolist() == [0, 1] * 3, torch.cdist(drawn, targets)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    return api.train("shapes-clip-pretrain", TINY_CLIP, runs_dir=tmp_path_factory.mktemp("clip"), quiet=True)


def test_unclip_trains_resumes_exactly_samples_and_draws_variations(tmp_path, monkeypatch, clip_run):
    monkeypatch.chdir(tmp_path)
    recipe = [*SMALL, f'train.clip_run="{clip_run.dir}"']
    full = api.train("shapes-unclip", recipe, runs_dir="full", quiet=True)
    assert full.recipe.train.clip_run == str(clip_run.dir.resolve())
    part = api.train("shapes-unclip", recipe, stop_at=4, runs_dir="part", quiet=True)
    api.train(resume=part.dir, quiet=True)
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    for module in ("prior", "denoiser", "denoiser_ema", "null_text", "null_image"):
        for key, tensor in a["models"][module].items():
            assert torch.equal(tensor, b["models"][module][key]), (module, key)
    rows = [r for r in full.files.read_metrics() if r["kind"] == "train"]
    assert all("loss_prior" in r and "loss" in r for r in rows)

    out = draw_grid(full.dir, ["a red circle", "a blue square"], n=2, out=tmp_path / "grid.png")
    assert out.is_file()
    pipeline = UnCLIP(full.recipe.train)
    assert pipeline.sampling() == (
        "prior DDIM 2 steps, guidance 1; decoder dpm-solver 2 steps, guidance 3; "
        f"embeddings of CLIP {clip_run.dir.resolve()}"
    )
    # a CLIP metric judged by the CLIP the images were drawn with says so in its protocol; another judge does not
    loaded = load_clip("", str(clip_run.dir), key="[eval.clip-score]")
    assert judge(loaded, SimpleNamespace(sampling=pipeline.sampling())).endswith(OWN_JUDGE)
    assert OWN_JUDGE not in judge(loaded, SimpleNamespace(sampling="best of 4 by CLIP /elsewhere"))
    longer = SimpleNamespace(sampling=f"best of 4 by CLIP {clip_run.dir.resolve()}-2")  # another run it prefixes
    assert OWN_JUDGE not in judge(loaded, longer)

    # variations: the image's CLIP embedding replaces the prior's, so the prompts no longer matter
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    varied = UnCLIP(attrs.evolve(full.recipe.train, variation_of=str(tmp_path / "red.png")))
    assert varied.sampling().startswith(f"variations of {tmp_path / 'red.png'}, decoder")
    draw = dalle_kit.Trainer.restore(Run.open(full.dir, get_registry(), quiet=True), varied).sampler()
    x = draw(["a red circle", "a blue square"], torch.Generator().manual_seed(0))
    y = draw(["a green triangle", "a white square"], torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.equal(x, y)
    plain = dalle_kit.Trainer.restore(Run.open(full.dir, get_registry(), quiet=True), pipeline).sampler()
    assert not torch.equal(plain(["a red circle", "a blue square"], torch.Generator().manual_seed(0)), x)
    assert draw_grid(
        full.dir, ["variations"], n=2, out=tmp_path / "v.png", settings=[f'train.variation_of="{tmp_path / "red.png"}"']
    ).is_file()


def test_a_bad_variation_image_is_one_line(tmp_path, monkeypatch, clip_run, run_cli):
    monkeypatch.chdir(tmp_path)
    run = api.train("shapes-unclip", [*SMALL, "train.steps=2", f'train.clip_run="{clip_run.dir}"'], quiet=True)
    code, _, err = run_cli("sample", str(run.dir), "x", "--set", "train.variation_of=missing.png")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "variation_of" in err and "'missing.png' is not a file" in err, err
    (tmp_path / "junk.png").write_bytes(b"not an image")
    code, _, err = run_cli("sample", str(run.dir), "x", "--set", "train.variation_of=junk.png")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "[train] variation_of 'junk.png': not a readable image" in err, err
    assert not (run.dir / "sample.png").exists()


@pytest.mark.unit
def test_a_missing_clip_run_names_the_command_that_makes_it(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("run", "shapes-unclip")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no finished shapes-clip-pretrain run in runs/" in err and "dalle-kit run shapes-clip-pretrain`" in err
    assert not (tmp_path / "runs").exists()
