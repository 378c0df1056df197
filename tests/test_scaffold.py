"""`dalle-kit new-plugin` writes a package that installs, is discovered, passes its own tests and trains."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import TINY, write_recipe

from dalle_kit import api
from dalle_kit.registry import Registry

KINDS = ["generator", "discriminator", "text_encoder", "loss", "dataset"]


def install_and_test(root, site, passed: int):
    """pip-install the generated package into `site` and run its own tests from its folder against that copy."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--disable-pip-version-check", "--target", str(site), str(root)],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and f"{passed} passed" in result.stdout, result.stdout + result.stderr
    return site


def test_new_plugin_end_to_end(run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("new-plugin", "toy", *[a for k in KINDS for a in ("--kind", k)], "--dir", tmp_path)
    assert code == 0, err
    root = tmp_path / "dalle-kit-toy"
    assert (root / "pyproject.toml").read_text().count('[project.entry-points."dalle_kit"]') == 1
    site = install_and_test(root, tmp_path / "site", passed=5)
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
    code, _, err = run_cli("new-plugin", "ok", "--kind", "pipelin", "--dir", tmp_path)
    assert code == 2 and "choose from: " in err and "generator" in err.split("choose from: ")[1]
    assert all(k in err.split("choose from: ")[1] for k in ("pipeline", "metric", "kind", "hook"))
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


def test_new_plugin_makes_a_pipeline_a_kind_a_hook_and_a_metric(run_cli, tmp_path, monkeypatch):
    """The scaffold's other examples: a pipeline on the trainer, a new kind with a part, a training-event hook with
    its own recipe table (an early stopper), a metric; the package's tests pass and a recipe of them trains,
    stops early as its table asks, resumes, and is scored."""
    kinds = ["pipeline", "metric", "kind", "hook", "text_encoder"]
    code, out, err = run_cli("new-plugin", "kit", *[a for k in kinds for a in ("--kind", k)], "--dir", tmp_path)
    assert code == 0, err
    root = tmp_path / "dalle-kit-kit"
    site = install_and_test(root, tmp_path / "site", passed=4)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.discover(select="kit")
    assert registry.problems == []
    assert "kit_painter" in registry.kinds and "kit-painter" in registry.parts["kit_painter"]
    assert list(registry.settings) == ["kit-hook"]
    readme = (root / "README.md").read_text()
    assert 'pipeline = "kit-pipeline"' in readme and "[hooks.kit-hook]" in readme and '"kit-metric"' in readme
    body = """
name = "kit-run"
pipeline = "kit-pipeline"
[data]
name = "shapes"
size = 16
train_size = 128
test_size = 32
[text_encoder]
name = "kit-text"
[train]
steps = 40
batch_size = 16
log_every = 5
[sample]
prompts = ["a red circle"]
per_prompt = 2
every = 0
[eval]
metrics = ["kit-metric"]
num_samples = 8
[hooks.kit-hook]
patience = 2
min_delta = 10.0
"""
    run = api.train(str(write_recipe(tmp_path, body)), runs_dir=tmp_path / "runs", quiet=True, registry=registry)
    # the first logged loss is the best by 10 or more: two logged steps later the stopper asks to stop
    assert run.interrupted is False and [p.name for p in (run.dir / "checkpoints").iterdir()] == [
        "step-00000015.safetensors"
    ]
    assert "[hooks.kit-hook]\npatience = 2\nmin_delta = 10.0\n" in (run.dir / "recipe.toml").read_text()
    run = api.train(resume=run.dir, quiet=True, registry=registry)  # the rebuilt state stops it at its next log
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir())[-1] == "step-00000020.safetensors"
    from dalle_kit.tools.evaluate import evaluate_run

    result = evaluate_run(run, ["kit-metric"], num_samples=8)["kit-metric"]
    assert -1 <= result.values["brightness_gap"] <= 1 and result.protocol.n_generated == 8
