"""Run directories written by an older dalle-kit (tests/fixtures/runs-0.1.0) still sample, evaluate and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from dalle_kit.checkpoint import latest_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1.0"


@pytest.fixture(params=["gan", "vae"])
def old_run(request, tmp_path) -> Path:
    """A copy (the committed files are never written to)."""
    return Path(shutil.copytree(FIXTURES / request.param, tmp_path / request.param))


def test_old_run_samples(old_run, run_cli, tmp_path):
    out = tmp_path / "grid.png"
    code, _, err = run_cli("sample", old_run, "a red circle", "a blue square", "-n", "2", "-o", out)
    assert code == 0, err
    assert Image.open(out).size[1] >= 2 * 32


def test_old_run_evaluates(old_run, run_cli):
    code, out, err = run_cli("eval", old_run, "-m", "fid", "-n", "16", "--json")
    assert code == 0, err
    row = json.loads(out)["fid"]
    assert row["fid"] > 0 and row["protocol"]["n_generated"] == 16


def test_old_run_trains_for_longer(old_run, run_cli):
    assert latest_checkpoint(old_run / "checkpoints")[0] == 4
    code, _, err = run_cli("run", "--resume", old_run, "--set", "train.steps=6", "-q")
    assert code == 0, err
    assert latest_checkpoint(old_run / "checkpoints")[0] == 6


def test_saved_recipes_record_their_format_and_version(old_run, tmp_path, run_cli):
    from dalle_kit import __version__
    from dalle_kit.recipe import RECIPE_FORMAT

    assert "recipe_format" not in (old_run / "recipe.toml").read_text()  # written before formats were recorded
    code, out, err = run_cli("recipe", "show", old_run / "recipe.toml")
    assert code == 0, err
    assert f"recipe_format = {RECIPE_FORMAT}" in out and f'written_by = "dalle-kit {__version__}"' in out
    newer = tmp_path / "newer.toml"
    newer.write_text(
        f'recipe_format = {RECIPE_FORMAT + 1}\nwritten_by = "dalle-kit 9.0"\n' + (old_run / "recipe.toml").read_text()
    )
    code, out, err = run_cli("recipe", "check", newer)
    assert code == 2 and "written by dalle-kit 9.0" in err and "pip install -e ." in err
    assert len(err.strip().splitlines()) == 1


def test_settings_a_newer_version_dropped_are_ignored_with_a_warning(old_run, run_cli, tmp_path):
    """As diffusers loads an older config: a key the installed part no longer declares is named and ignored, so the
    run still samples; in a recipe being written (not a run directory) the same key is an error."""
    recipe = old_run / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("[generator]\n", "[generator]\nremoved_setting = 3\n", 1))
    with pytest.warns(
        UserWarning, match=r"\[generator\] 'removed_setting' is not a setting of the installed version and is ignored"
    ):
        code, _, err = run_cli("sample", old_run, "a red circle", "-n", "1", "-o", tmp_path / "s.png")
    assert code == 0, err
    code, _, err = run_cli("recipe", "check", recipe)
    assert code == 2 and "[generator] key 'removed_setting': unknown key" in err


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_the_core_trainer_trains_exactly_as_the_loops_it_replaced(family, tmp_path):
    """The fixture runs were trained by the pipelines' own loops (before dalle_kit.trainer, on one thread); the same
    recipe trained now through the core trainer gives the same weights. They matched bit for bit under the torch
    release that trained them; torch 2.14 changed some kernels' summation order, so the comparison allows float
    rounding: the largest difference after the 4 steps is 3e-7, where one different noise draw, step or update
    moves a weight by about the learning rate, 2e-4."""
    import torch

    from dalle_kit import api
    from dalle_kit.checkpoint import load_state

    recipe = tmp_path / "recipe.toml"
    recipe.write_text((FIXTURES / family / "recipe.toml").read_text().replace('name = "fixture-', 'name = "again-', 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread count changes float summation order
    try:
        run = api.train(str(recipe), runs_dir=tmp_path / "runs", quiet=True)
    finally:
        torch.set_num_threads(threads)
    old = load_state(latest_checkpoint(FIXTURES / family / "checkpoints")[1])
    new = load_state(latest_checkpoint(run.checkpoints.folder)[1])
    assert old["step"] == new["step"] and sorted(old["models"]) == sorted(new["models"])
    for net, tensors in old["models"].items():
        for key, tensor in tensors.items():
            torch.testing.assert_close(
                new["models"][net][key],
                tensor,
                rtol=0,
                atol=2e-6,
                msg=f"{net}.{key} differs from the fixture by more than float rounding",
            )
