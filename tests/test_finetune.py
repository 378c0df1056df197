"""Fine-tuning from a run: init_from loads its weights; 'conditioning' and 'lora' train strictly fewer parameters."""

from __future__ import annotations

import pytest
import torch

from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import sampler

SHORT = ["train.steps=6", "sample.every=0", "train.checkpoint_every=6"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from conftest import TINY

    folder = tmp_path_factory.mktemp("source")
    (folder / "tiny.toml").write_text(TINY)
    run = api.train(str(folder / "tiny.toml"), ["sample.every=0"], runs_dir=folder / "runs", quiet=True)
    return folder, run


def weights(run_dir) -> dict:
    return load_state(latest_checkpoint(run_dir / "checkpoints")[1])["models"]


def finetune(source, tmp_path, mode, *extra):
    folder, _ = source
    return api.train(
        str(folder / "tiny.toml"),
        [*SHORT, f'init_from="{folder / "runs" / "tiny"}"', f'finetune="{mode}"', *extra],
        runs_dir=tmp_path / mode,
        quiet=True,
    )


def finetune_row(run) -> dict:
    (row,) = [r for r in run.files.read_metrics() if r["kind"] == "finetune"]
    return row


def test_modes_train_fewer_parameters_and_print_the_count(source, tmp_path, capsys):
    counts = {}
    for mode in ("full", "conditioning", "lora"):
        run = finetune(source, tmp_path, mode)
        row = finetune_row(run)
        counts[mode] = row["trainable"]
        assert f"finetune {mode} from {source[1].dir}" in capsys.readouterr().out
        assert row["init_from"] == str(source[1].dir) and Run.open(run.dir, get_registry()).recipe.init_from == str(
            source[1].dir
        )
    assert counts["lora"] < counts["conditioning"] < counts["full"]
    full_total = sum(
        t.numel()
        for net in weights(source[1].dir).values()
        for k, t in net.items()
        if t.is_floating_point() and not k.endswith(("_u", "_v", "running_mean", "running_var"))
    )
    assert counts["full"] == full_total


def test_full_starts_from_the_source_weights(source, tmp_path):
    run = finetune(source, tmp_path, "full", "train.lr=1e-30")
    before, after = weights(source[1].dir), weights(run.dir)
    for key, tensor in before["generator"].items():
        if tensor.is_floating_point() and "running" not in key:
            assert torch.equal(tensor, after["generator"][key]), key


def test_lora_keeps_base_weights_and_trains_adapters(source, tmp_path):
    run = finetune(source, tmp_path, "lora")
    before, after = weights(source[1].dir), weights(run.dir)
    # base weights: the projection's original weight lives under parametrizations.weight.original now
    assert torch.equal(
        after["generator"]["text_proj.0.parametrizations.weight.original"], before["generator"]["text_proj.0.weight"]
    )
    assert torch.equal(after["generator"]["net.0.weight"], before["generator"]["net.0.weight"])
    assert after["generator"]["text_proj.0.parametrizations.weight.0.up"].abs().sum() > 0
    # the run samples (adapters rebuilt before its weights are read) and resumes
    draw = sampler(Run.open(run.dir, get_registry(), quiet=True))
    images = draw(["a red circle"] * 2, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_conditioning_mode_freezes_the_rest(source, tmp_path):
    run = finetune(source, tmp_path, "conditioning")
    before, after = weights(source[1].dir), weights(run.dir)
    assert torch.equal(after["generator"]["net.0.weight"], before["generator"]["net.0.weight"])
    assert not torch.equal(after["generator"]["text_proj.0.weight"], before["generator"]["text_proj.0.weight"])


@pytest.mark.parametrize(
    "override, expect",
    [
        ('finetune="lora"', "there is no init_from"),
        ('finetune="adapters"', "not a fine-tuning mode"),
        ('init_from="runs/never-trained"', "no finished run named never-trained-<timestamp>"),
    ],
)
def test_bad_finetune_settings_are_one_line(tiny_recipe, tmp_path, run_cli, monkeypatch, override, expect):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("run", tiny_recipe, "--set", override, "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_pipeline_that_cannot_finetune_says_so(tmp_path, run_cli):
    code, _, err = run_cli("recipe", "check", "shapes-clip-pretrain", "--set", 'init_from="runs/x"')
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "pipeline 'clip-pretrain' cannot start from another run" in err
        and "use a pipeline that fine-tunes: gan, vae" in err  # the installed ones, read from the registry
    ), err


def test_init_from_a_different_architecture_is_one_line(source, tmp_path, run_cli):
    folder, run = source
    code, _, err = run_cli(
        "run",
        folder / "tiny.toml",
        "--set",
        f'init_from="{run.dir}"',
        "--set",
        "generator.ngf=8",
        "--runs-dir",
        tmp_path,
        "-q",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "[generator]" in err, err


def test_vae_pipeline_finetunes_with_lora(tmp_path, capsys):
    """init_from/finetune are the recipe's, not the gan pipeline's: the vae pipeline takes them too."""
    small = [
        "data.train_size=512",
        "data.test_size=64",
        "generator.width=8",
        "generator.latent_dim=16",
        "train.encoder_width=8",
        "train.batch_size=16",
        "train.steps=4",
        "sample.every=0",
        "train.log_every=2",
    ]
    source = api.train("shapes-vae", small, runs_dir=tmp_path / "source", quiet=True)
    run = api.train(
        "shapes-vae", [*small, f'init_from="{source.dir}"', 'finetune="lora"'], runs_dir=tmp_path / "ft", quiet=True
    )
    row = finetune_row(run)
    assert 0 < row["trainable"] < row["total"] / 5 and "parameters train" in capsys.readouterr().out
    before, after = weights(source.dir), weights(run.dir)
    assert torch.equal(after["generator"]["fc.weight"], before["generator"]["fc.weight"])  # frozen
    assert after["generator"]["text_proj.0.parametrizations.weight.0.up"].abs().sum() > 0  # adapters trained
    draw = sampler(Run.open(run.dir, get_registry(), quiet=True))
    assert torch.isfinite(draw(["a red circle"], torch.Generator().manual_seed(0))).all()
