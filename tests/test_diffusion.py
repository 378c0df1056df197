"""Pipeline `diffusion` (plugins/diffusion/pipeline.py): a kind (`denoiser`), a part (`unet`, diffusers' UNet2DConditionModel)
and a pipeline, all plugins on the core trainer. CI-sized: a 16x16 UNet of two levels trains a few steps, resumes
bit for bit, samples with DDIM and DPM-Solver with and without guidance, and bad settings stop at `recipe check`."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHAPES_16, write_recipe

from dalle_kit import api
from dalle_kit.tools.sample import sample as draw_grid
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit import trainer
from dalle_kit.tools.testing import check_part

TINY_DIFFUSION = (
    """\
name = "tiny-diffusion"
pipeline = "diffusion"
seed = 0

"""
    + SHAPES_16
    + """
[denoiser]
name = "unet"
channels = [8, 16]
groups = 4
head_dim = 8

[train]
steps = 8
batch_size = 16
warmup = 2
ema_start = 2
sample_steps = 3
log_every = 2
checkpoint_every = 4

[sample]
prompts = ["a red circle", "a blue square"]
every = 4
per_prompt = 2
"""
)


def test_the_denoiser_kind_and_the_unet_conform():
    registry = get_registry()
    assert "denoiser" in registry.kinds and registry.kind_plugins["denoiser"].distribution == "dalle-kit"
    unet = registry.parts["denoiser"]["unet"].cls
    check_part(unet, unet.Config(channels=[8, 16], groups=4, head_dim=8))


def test_trains_resumes_bit_for_bit_and_samples(tmp_path):
    recipe = write_recipe(tmp_path, TINY_DIFFUSION)
    full = api.train(str(recipe), runs_dir=tmp_path / "full", quiet=True)
    part = api.train(str(recipe), stop_at=4, runs_dir=tmp_path / "part", quiet=True)
    part = api.train(resume=part.dir, runs_dir=tmp_path / "part", quiet=True)
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    assert a["step"] == b["step"] == 8
    assert set(a["models"]) == {"text_encoder", "denoiser", "null_text", "denoiser_ema"}
    for net in a["models"]:
        for key, tensor in a["models"][net].items():
            assert torch.equal(tensor, b["models"][net][key]), f"{net}.{key} differs after resume"
    assert (full.dir / "samples" / "step-00000008.png").exists()

    run = Run.open(full.dir, get_registry(), quiet=True)
    prompts = ["a red circle", "a blue square"]
    images = {}
    for sampler in ("ddim", "dpm-solver"):
        for scale in (1.0, 3.0):
            draw = trainer.sampler(run, sampler=sampler, guidance_scale=scale, sample_steps=3)
            images[sampler, scale] = draw(prompts, torch.Generator().manual_seed(0))
            again = draw(prompts, torch.Generator().manual_seed(0))
            assert images[sampler, scale].shape == (2, 3, 16, 16) and torch.equal(images[sampler, scale], again)
            assert images[sampler, scale].min() >= -1 and images[sampler, scale].max() <= 1
    assert not torch.equal(images["ddim", 1.0], images["ddim", 3.0])  # guidance changes the draw
    assert not torch.equal(images["ddim", 3.0], images["dpm-solver", 3.0])
    out = draw_grid(full.dir, prompts, n=2, out=tmp_path / "s.png")
    assert out.exists()


def test_sample_takes_the_pipelines_settings_with_set(tmp_path, run_cli):
    """`dalle-kit sample --set train.KEY=VALUE` draws with other sampling settings (validated like a recipe's
    --set), and leaves the run's recipe as it was."""
    recipe = write_recipe(tmp_path, TINY_DIFFUSION.replace("steps = 8", "steps = 2"))
    run_dir = api.train(str(recipe), runs_dir=tmp_path / "runs", quiet=True).dir
    saved = (run_dir / "recipe.toml").read_text()
    grids = {}
    for name, settings in {
        "default": [],
        "guided": ["--set", "train.guidance_scale=1.0", "--set", "train.sampler=ddim"],
    }.items():
        code, out, err = run_cli(
            "sample", run_dir, "a red circle", "-n", "2", "-o", tmp_path / f"{name}.png", *settings
        )
        assert code == 0, err
        grids[name] = (tmp_path / f"{name}.png").read_bytes()
    assert grids["default"] != grids["guided"]
    assert (run_dir / "recipe.toml").read_text() == saved
    for setting, words in [
        ("train.guidance_scal=1", "unknown key"),
        ("train.sample_steps=0", "sample_steps"),
        ("train.guidance_scale=abc", "expected float"),
        ("denoiser.channels=[4, 8]", "only the pipeline's [train] settings"),
    ]:
        code, out, err = run_cli("sample", run_dir, "a red circle", "-o", tmp_path / "x.png", "--set", setting)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        # the value given on the command line is at fault, not the run's recipe.toml (which must not be edited)
        assert err.startswith(f"dalle-kit: error: --set {setting}:") and "recipe.toml" not in err, err
        assert not (tmp_path / "x.png").exists()


def test_eval_takes_the_pipelines_settings_with_set(tmp_path, run_cli, monkeypatch, capsys):
    """`dalle-kit eval --set train.KEY=VALUE` scores draws made with other sampling settings, records them in each
    score's protocol, and refuses a bad setting in one line before any row is written."""
    monkeypatch.setenv("DALLE_KIT_CACHE", str(tmp_path / "cache"))
    recipe = write_recipe(tmp_path, TINY_DIFFUSION.replace("steps = 8", "steps = 2"))
    run_dir = api.train(str(recipe), runs_dir=tmp_path / "runs", quiet=True).dir
    saved = (run_dir / "recipe.toml").read_text()
    capsys.readouterr()  # the training's own lines
    base = ["eval", run_dir, "--metric", "kid", "-n", "12", "--json", "-q"]
    code, out, err = run_cli(*base)
    assert code == 0, err
    assert json.loads(out)["kid"]["protocol"]["sampling"] == "dpm-solver, 3 steps, guidance 3"
    settings = ["--set", "train.sampler=ddim", "--set", "train.sample_steps=2", "--set", "train.guidance_scale=1.0"]
    code, out, err = run_cli(*base, *settings)
    assert code == 0, err
    assert json.loads(out)["kid"]["protocol"]["sampling"] == "ddim, 2 steps, guidance 1"
    rows = [r for r in Run.open(run_dir, get_registry()).files.read_metrics() if r.get("kind") == "eval"]
    assert [r["protocol"]["sampling"] for r in rows] == ["dpm-solver, 3 steps, guidance 3", "ddim, 2 steps, guidance 1"]
    for setting, words in [
        ("train.sample_step=2", "did you mean 'sample_steps'"),
        ("train.sample_steps=0", "sample_steps"),
        ("denoiser.channels=[4, 8]", "eval changes only the pipeline's [train] settings"),
    ]:
        code, out, err = run_cli(*base, "--set", setting)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert len([r for r in Run.open(run_dir, get_registry()).files.read_metrics() if r.get("kind") == "eval"]) == 2
    assert (run_dir / "recipe.toml").read_text() == saved


@pytest.mark.parametrize(
    "change, words",
    [
        ("size = 16", ("size = 17", "is not divisible by 2")),
        ("groups = 4", ("groups = 3", "not divisible by groups = 3")),
        ("sample_steps = 3", ("sample_steps = 2000", "sample_steps = 2000 exceeds timesteps = 1000")),
        ("warmup = 2", ('sampler = "euler"', "sampler")),
    ],
)
def test_bad_settings_stop_at_recipe_check_in_one_line(change, words, tmp_path, run_cli):
    new, message = words
    recipe = write_recipe(
        tmp_path, TINY_DIFFUSION.replace(change, new if change != "warmup = 2" else f"warmup = 2\n{new}")
    )
    for args in (("recipe", "check", recipe), ("run", recipe, "--runs-dir", tmp_path / "runs")):
        code, out, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


class _Oracle(torch.nn.Module):
    """A denoiser that knows the one image x0 every sample should become: it returns the target for x_t, off by
    `error` (Gaussian, per call), as a trained one is."""

    def __init__(self, x0, alphas_cumprod, prediction, error=0.0):
        super().__init__()
        self.x0, self.ab, self.prediction, self.error = x0, alphas_cumprod, prediction, error
        self.channels, self.image_size = x0.shape[0], x0.shape[-1]
        self.rng = torch.Generator().manual_seed(1)

    def forward(self, x, t, text):
        ab = self.ab[t].view(-1, 1, 1, 1).float()
        eps = (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        target = eps if self.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * self.x0
        return target + self.error * torch.randn(target.shape, generator=self.rng)


class _Zeros(torch.nn.Module):
    def forward(self, prompts):
        return torch.zeros(len(prompts), 4)


@pytest.mark.parametrize("error", [0.0, 0.05])
@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver"])
def test_the_sampling_loop_turns_noise_into_the_oracles_image(prediction, sampler, error):
    """With a perfect (or 5% wrong) denoiser the drawn images are its image: the schedulers, their settings (trailing
    spacing from t = 999, x0 clipping / thresholding, the cosine schedule's lambda clipping) and the guidance arithmetic
    are right. Without the clipping, the noise prediction's error is multiplied by 1/sqrt(alpha_bar(999)) ~ 20,000 (cosine
    schedule) in the first step's x0 estimate."""
    from dalle_kit_plugins.diffusion.pipeline import Diffusion, NullText

    pipeline = Diffusion(Diffusion.Config(prediction=prediction, sampler=sampler, sample_steps=25, guidance_scale=3.0))
    x0 = -torch.ones(3, 8, 8)
    x0[0, 2:6, 2:6] = 1.0  # a red square on black
    oracle = _Oracle(x0, pipeline.noise_scheduler().alphas_cumprod, prediction, error)
    draw = pipeline.drawer(
        {"text_encoder": _Zeros(), "denoiser": oracle, "null_text": NullText(4)}, torch.device("cpu")
    )
    images = draw(["a red square"] * 3, torch.Generator().manual_seed(0))
    assert (images - x0).abs().max() < 0.1
