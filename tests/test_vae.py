"""The `vae` pipeline and the `vae-decoder` generator: a brief shapes-vae run learns, resume is exact,
the decoder conforms at other sizes and also trains as a GAN generator."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import sampler
from dalle_kit.tools.testing import check_part

# shapes-vae made small: fewer and smaller images, narrow networks, no grids.
SMALL = [
    "data.train_size=2000",
    "data.test_size=256",
    "generator.width=8",
    "generator.latent_dim=16",
    "train.encoder_width=8",
    "train.batch_size=32",
    "sample.every=0",
    "sample.per_prompt=1",
]


def rows(run, kind: str = "train") -> list[dict]:
    return [r for r in run.files.read_metrics() if r["kind"] == kind]


def test_brief_run_learns_and_samples(tmp_path):
    run = api.train(
        "shapes-vae",
        [*SMALL, "train.steps=100", "train.log_every=10", "train.checkpoint_every=1000"],
        runs_dir=tmp_path,
        quiet=True,
    )
    log = rows(run)
    assert [r["step"] for r in log] == list(range(10, 101, 10))
    assert all(math.isfinite(r[k]) for r in log for k in ("loss", "recon", "kl", "recon_test"))
    first, last = log[0]["recon_test"], log[-1]["recon_test"]
    assert last < 0.3 * first, f"held-out reconstruction error {first:.4f} at step 10 -> {last:.4f} at step 100"
    draw = sampler(Run.open(run.dir, get_registry(), quiet=True))
    images = draw(["a red circle", "a blue square"], torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert sorted(p.name for p in (run.dir / "samples").glob("*.png")) == ["step-00000100.png"]


def test_resume_matches_uninterrupted(tmp_path):
    overrides = [*SMALL, "train.steps=30", "train.log_every=5", "train.checkpoint_every=10", "train.kl_warmup=20"]
    full = api.train("shapes-vae", overrides, runs_dir=tmp_path / "full", quiet=True)
    part = api.train("shapes-vae", overrides, stop_at=12, runs_dir=tmp_path / "part", quiet=True)
    assert latest_checkpoint(part.checkpoints.folder)[0] == 12
    api.train(resume=part.dir, quiet=True)
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    assert a["step"] == b["step"] == 30
    for net in ("image_encoder", "generator", "text_encoder"):
        for key, tensor in a["models"][net].items():
            assert torch.equal(tensor, b["models"][net][key]), f"{net}.{key} differs after resume"
    for key, state in a["optim"]["vae"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optim"]["vae"]["state"][key][name])
    assert a["extra"] == b["extra"]
    strip = [{k: v for k, v in r.items() if k != "time"} for r in rows(full)]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in rows(part)]


def test_kl_warmup_is_linear():
    cls = get_registry().parts["pipeline"]["vae"].cls
    vae = cls(cls.Config(beta=2.0, kl_warmup=100))
    assert [vae.kl_weight(s) for s in (1, 50, 100, 500)] == [0.02, 1.0, 2.0, 2.0]
    assert cls(cls.Config(beta=2.0)).kl_weight(1) == 2.0


@pytest.mark.parametrize("image_size", [8, 16, 64])
def test_vae_decoder_conforms_at_other_sizes(image_size):
    cls = get_registry().parts["generator"]["vae-decoder"].cls
    check_part(cls, cls.Config(width=8), image_size=image_size)


@pytest.mark.parametrize("norm", ["group", "none"])
def test_vae_decoder_norm_variants_conform(norm):
    cls = get_registry().parts["generator"]["vae-decoder"].cls
    check_part(cls, cls.Config(width=8, norm=norm))


def test_vae_decoder_trains_as_gan_generator(tiny_recipe, tmp_path):
    overrides = [
        'generator={name = "vae-decoder", width = 8, latent_dim = 16}',
        "train.steps=6",
        "train.log_every=3",
        "sample.every=0",
    ]
    run = api.train(str(tiny_recipe), overrides, runs_dir=tmp_path, quiet=True)
    assert json.loads((run.dir / "parts.json").read_text())["generator"]["name"] == "vae-decoder"
    log = rows(run)
    assert [r["step"] for r in log] == [3, 6]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in log)
    assert latest_checkpoint(run.checkpoints.folder)[0] == 6
