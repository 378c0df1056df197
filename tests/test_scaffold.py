"""`dalle-kit new-plugin` writes a package that installs, is discovered, passes its own tests and trains."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import TINY, write_recipe

from dalle_kit import api
from dalle_kit.registry import Registry

KINDS = ["generator", "discriminator", "text_encoder", "loss", "dataset"]


def test_new_plugin_end_to_end(run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("new-plugin", "toy", *[a for k in KINDS for a in ("--kind", k)], "--dir", tmp_path)
    assert code == 0, err
    root = tmp_path / "dalle-kit-toy"
    assert (root / "pyproject.toml").read_text().count('[project.entry-points."dalle_kit"]') == 1
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    # the generated package's own tests pass, run from its folder against the installed copy
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    # discovered through its entry point, every kind
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.discover(select="toy")
    assert registry.problems == []
    names = {
        "generator": "toy-generator",
        "discriminator": "toy-discriminator",
        "text_encoder": "toy-text",
        "loss": "toy-loss",
        "dataset": "toy-data",
    }
    for kind in KINDS:  # each part named for what it is, not all after the package
        assert registry.parts[kind][names[kind]].plugin.distribution == "dalle-kit-toy"
    assert all(f'name = "{n}"' in (root / "README.md").read_text() for n in names.values())
    # and a recipe made only of its parts trains
    body = """
name = "toy-run"
pipeline = "gan"
[data]
name = "toy-data"
train_size = 64
test_size = 16
[text_encoder]
name = "toy-text"
[generator]
name = "toy-generator"
[discriminator]
name = "toy-discriminator"
[loss]
name = "toy-loss"
[train]
steps = 4
batch_size = 8
[sample]
prompts = ["a red image"]
every = 2
per_prompt = 2
"""
    run = api.train(str(write_recipe(tmp_path, body)), runs_dir=tmp_path / "runs", quiet=True, registry=registry)
    assert (run.dir / "checkpoints" / "step-00000004.safetensors").exists()
    # a generated generator also slots into the built-in recipe
    tiny = write_recipe(
        tmp_path,
        TINY.replace(
            '[generator]\nname = "dcgan"\nngf = 16\nlatent_dim = 32\ntext_embed = 16',
            '[generator]\nname = "toy-generator"',
        ),
        "tiny-toy.toml",
    )
    api.train(str(tiny), ["train.steps=3"], runs_dir=tmp_path / "runs", quiet=True, registry=registry)


def test_new_plugin_refuses_bad_input(run_cli, tmp_path):
    code, _, err = run_cli("new-plugin", "Bad_Name", "--dir", tmp_path)
    assert code == 2 and "must be lowercase" in err
    code, _, err = run_cli("new-plugin", "ok", "--kind", "pipeline", "--dir", tmp_path)
    assert code == 2 and "choose from: " in err and "generator" in err.split("choose from: ")[1]
    assert run_cli("new-plugin", "ok", "--dir", tmp_path)[0] == 0
    code, _, err = run_cli("new-plugin", "ok", "--dir", tmp_path)
    assert code == 2 and "already exists" in err and "nothing was written" in err


def test_new_plugin_names(run_cli, tmp_path):
    """A one-part package's part takes the plugin's name; a 'dalle-kit-' prefix given by the user is not doubled."""
    assert run_cli("new-plugin", "dalle-kit-solo", "--dir", tmp_path)[0] == 0
    root = tmp_path / "dalle-kit-solo"
    assert root.is_dir() and not (tmp_path / "dalle-kit-dalle-kit-solo").exists()
    assert 'name = "solo"' in (root / "dalle_kit_solo" / "__init__.py").read_text()
    assert 'name = "dalle-kit-solo"' in (root / "pyproject.toml").read_text()
    code, _, err = run_cli("new-plugin", "dalle-kit-", "--dir", tmp_path)
    assert code == 2 and "own name" in err
