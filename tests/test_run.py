"""End-to-end: a tiny run makes its files, its losses are finite, conditioning works, resume is exact."""

from __future__ import annotations

import json
import math
import re
import shlex
import warnings

import pytest
import torch
from PIL import Image

from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.recipe import load_recipe
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import sampler


def test_tiny_run_writes_everything(tiny_recipe, tmp_path, run_cli):
    code, out, err = run_cli("run", tiny_recipe, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("tiny-")
    assert out.splitlines()[0] == f"run directory: {run_dir}"  # first, before training, so it can be watched
    assert out.splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    assert not (run_dir / ".lock").exists(), "the lock outlived the run"
    # resolved recipe: re-validates and has every default
    recipe = load_recipe(run_dir / "recipe.toml", get_registry())
    assert recipe.train.steps == 30 and recipe.train.lr == 2e-4
    parts = json.loads((run_dir / "parts.json").read_text())
    assert parts["generator"] == {
        "kind": "generator",
        "name": "dcgan",
        "plugin": "gan.dcgan",
        "distribution": "dalle-kit",
        "version": parts["generator"]["version"],
    }
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    for r in rows:
        assert math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) and r["time"] >= 0
    step, ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert step == 30 and ckpt.suffix == ".safetensors"
    assert not list((run_dir / "checkpoints").glob(".*tmp*")), "temporary checkpoint files left behind"
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step-00000015.png", "step-00000030.png"]
    assert Image.open(samples[-1]).size[1] >= 2 * 64  # two prompt rows of 64 px cells
    assert Image.open(run_dir / "loss_curve.png").format == "PNG"

    out_png = tmp_path / "grid.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli("sample", run_dir, "a red circle", "a blue square", "-n", "3", "-o", out_png)
    assert code == 0, err
    assert Image.open(out_png).size[1] >= 2 * 64
    assert not [w for w in caught if "vocabulary" in str(w.message)]  # every word was in the training captions

    with pytest.warns(UserWarning, match="'crimson', 'hexagon': not in the vocabulary") as caught:
        code, out, err = run_cli("sample", run_dir, "a crimson circle", "a blue hexagon", "-n", "1", "-o", out_png)
    assert code == 0, err
    assert len([w for w in caught if "vocabulary" in str(w.message)]) == 1  # one line for all the words


def _redness(images: torch.Tensor) -> torch.Tensor:
    """Mean of (R - B) over the pixels brighter than the background, per image."""
    img = (images + 1) / 2
    bright = img.amax(dim=1, keepdim=True) > 0.35
    diff = (img[:, 0:1] - img[:, 2:3]) * bright
    return diff.sum(dim=(1, 2, 3)) / bright.sum(dim=(1, 2, 3)).clamp(min=1)


def test_conditioning_red_vs_blue(tiny_recipe, tmp_path):
    overrides = [
        "train.steps=500",
        "train.lr=1e-3",
        "train.betas=[0.0, 0.9]",
        "train.matching_aware=true",
        "sample.every=0",
        "train.checkpoint_every=500",
        "data.train_size=2048",
    ]
    run = api.train(str(tiny_recipe), overrides, runs_dir=tmp_path / "runs", quiet=True)
    draw = sampler(Run.open(run.dir, get_registry(), quiet=True))
    g = torch.Generator().manual_seed(0)
    red = _redness(draw(["a red circle"] * 32 + ["a red square"] * 32, g))
    blue = _redness(draw(["a blue circle"] * 32 + ["a blue square"] * 32, g))
    # Red prompts give red-dominant shapes, blue prompts blue-dominant ones.
    assert red.mean() > blue.mean() + 0.2, (red.mean(), blue.mean())
    assert (red > 0).float().mean() > 0.7 and (blue < 0).float().mean() > 0.7


def same_models(run_a: Run, run_b: Run, *, step: int) -> tuple[dict, dict]:
    """Assert both runs' latest checkpoints are at `step` with bit-identical networks; returns the two states."""
    a = load_state(latest_checkpoint(run_a.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(run_b.checkpoints.folder)[1])
    assert a["step"] == b["step"] == step
    for net in ("generator", "discriminator", "text_encoder"):
        for key, tensor in a["models"][net].items():
            assert torch.equal(tensor, b["models"][net][key]), f"{net}.{key} differs"
    return a, b


def test_resume_matches_uninterrupted(tiny_recipe, tmp_path, run_cli):
    runs = tmp_path / "runs"
    full = api.train(str(tiny_recipe), runs_dir=runs / "full", quiet=True)
    part = api.train(str(tiny_recipe), stop_at=12, runs_dir=runs / "part", quiet=True)
    assert latest_checkpoint(part.checkpoints.folder)[0] == 12
    code, out, err = run_cli("run", "--resume", part.dir, "-q")
    assert code == 0, err
    a, b = same_models(full, part, step=30)
    for key, tensor in a["optim"]["g"]["state"].items():
        for name, value in tensor.items():
            assert torch.equal(value, b["optim"]["g"]["state"][key][name])
    # the log of the resumed run is the same sequence of steps, with the same losses
    rows_a = [json.loads(x) for x in (full.dir / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (part.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["loss_g"] for r in rows_a] == [r["loss_g"] for r in rows_b]


def test_resume_without_checkpoint_is_one_line(run_cli, tiny_recipe, tmp_path):
    run = Run.create(load_recipe(tiny_recipe, get_registry()), get_registry(), tmp_path / "runs")
    code, out, err = run_cli("run", "--resume", run.dir)
    assert code == 2 and "no checkpoint to resume from" in err and "Traceback" not in err


def test_extending_a_finished_run_matches_a_longer_one(tiny_recipe, tmp_path, run_cli):
    """`run --resume RUN --set train.steps=N` trains a finished run for longer; the weights equal a run made with N."""
    runs = tmp_path / "runs"
    full = api.train(str(tiny_recipe), runs_dir=runs / "full", quiet=True)
    short = api.train(str(tiny_recipe), ["train.steps=10"], runs_dir=runs / "short", quiet=True)
    assert latest_checkpoint(short.checkpoints.folder)[0] == 10
    code, out, err = run_cli("run", "--resume", short.dir, "--set", "train.steps=30", "-q")
    assert code == 0, err
    assert load_recipe(short.dir / "recipe.toml", get_registry(), check_name=False).train.steps == 30
    same_models(full, short, step=30)


def test_extending_refuses_other_changes_and_fewer_steps(tiny_recipe, tmp_path, run_cli):
    run = api.train(str(tiny_recipe), ["train.steps=10"], runs_dir=tmp_path / "runs", quiet=True)
    recipe_before = (run.dir / "recipe.toml").read_bytes()
    for args, message in [
        (["--set", "train.lr=1e-3"], "can only be trained for longer"),
        (["--set", "train.steps=10"], "already has a checkpoint at step 10"),
        (["--set", "train.steps=-3"], "--set train.steps=-3: [train] key 'steps'"),
        (["--set", "train.steps=abc"], "--set train.steps=abc: [train] key 'steps': expected integer"),
        (["--set", "train.lr_decay=linear", "--set", "train.steps=20"], "can only be trained for longer"),
    ]:
        code, out, err = run_cli("run", "--resume", run.dir, *args, "-q")
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "recipe.toml" not in err, err  # the value given is at fault, not the run's file (not to be edited)
    assert (run.dir / "recipe.toml").read_bytes() == recipe_before  # nothing rewritten by a refused extension
    assert latest_checkpoint(run.checkpoints.folder)[0] == 10


def test_extending_refuses_a_schedule_tied_to_steps(tiny_recipe, tmp_path, run_cli):
    run = api.train(
        str(tiny_recipe), ["train.steps=10", "train.lr_decay=linear"], runs_dir=tmp_path / "runs", quiet=True
    )
    code, out, err = run_cli("run", "--resume", run.dir, "--set", "train.steps=20", "-q")
    assert code == 2 and "learning-rate schedule" in err and "init_from" in err, err
    assert latest_checkpoint(run.checkpoints.folder)[0] == 10


def test_resuming_a_finished_run_says_what_to_do_or_ends_its_evaluation(tiny_recipe, tmp_path, run_cli):
    """A run that trained all its steps and was evaluated has nothing to resume: one line, its two commands work and
    nothing is scored twice; one stopped during its final evaluation scores only the metrics it lacks."""
    settings = ["train.steps=10", 'eval.metrics=["d-roc-auc"]', "eval.num_samples=32"]
    run = api.train(str(tiny_recipe), settings, runs_dir=tmp_path / "runs", quiet=True)

    def scored():
        return [(r["step"], r["metric"]) for r in run.files.read_metrics() if r["kind"] == "eval"]

    assert scored() == [(10, "d-roc-auc")]
    code, out, err = run_cli("run", "--resume", run.dir, "-q")
    assert code == 2 and "has trained all its 10 steps and evaluated, so there is nothing to resume" in err, err
    assert len(err.strip().splitlines()) == 1 and scored() == [(10, "d-roc-auc")]
    longer, again = re.findall(r"to (?:train it for longer|score it again): ([^;]+)", err.strip())
    for command in (longer, again):
        words = shlex.split(command)
        code, out, _ = run_cli(*words[words.index("run" if command == longer else "eval") :], "-q")
        assert code == 0, command
    assert scored() == [(10, "d-roc-auc"), (20, "d-roc-auc"), (20, "d-roc-auc")]  # the longer run's, then eval's

    lines = (run.dir / "metrics.jsonl").read_text().splitlines()
    (run.dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines if '"eval"' not in line))
    code, out, err = run_cli("run", "--resume", run.dir, "-q")  # as if stopped before its final evaluation ended
    assert code == 0, err
    assert scored() == [(20, "d-roc-auc")]
    assert [r["step"] for r in run.files.read_metrics() if r["kind"] == "train"][-1] == 20  # no step trained again


def test_a_finished_run_with_a_schedule_tied_to_its_steps_is_pointed_to_a_new_run(tiny_recipe, tmp_path, run_cli):
    run = api.train(
        str(tiny_recipe), ["train.steps=10", "train.lr_decay=linear"], runs_dir=tmp_path / "runs", quiet=True
    )
    code, out, err = run_cli("run", "--resume", run.dir, "-q")
    assert code == 2 and "has trained all its 10 steps, so there is nothing to resume" in err, err
    (command,) = re.findall(r"to train it on from its weights, in a new run: ([^;]+)", err.strip())
    words = shlex.split(command)
    assert words[words.index("run") :] == ["run", str(run.dir / "recipe.toml"), "--set", f"init_from={run.dir}"]
    code, out, err = run_cli("recipe", "check", *words[words.index("run") + 1 :])
    assert code == 0, err


def test_a_stop_step_the_run_has_passed_is_refused(tiny_recipe, tmp_path, run_cli):
    """`run --resume RUN --stop-at N` with N at or before the run's step trained one step and stopped past N."""
    run = api.train(str(tiny_recipe), stop_at=10, runs_dir=tmp_path / "runs", quiet=True)
    for stop in ("5", "10"):
        code, out, err = run_cli("run", "--resume", run.dir, "--stop-at", stop, "-q")
        assert code == 2 and f"--stop-at {stop}: {run.dir} is at step 10 already; give a later step" in err, err
    assert latest_checkpoint(run.checkpoints.folder)[0] == 10 and not (run.dir / ".lock").exists()
    code, out, err = run_cli("run", "--resume", run.dir, "--stop-at", "12", "-q")
    assert code == 0 and latest_checkpoint(run.checkpoints.folder)[0] == 12, err


def test_a_run_s_name_means_its_newest_run(tiny_recipe, tmp_path, run_cli, monkeypatch):
    """`eval`, `sample` and `run --resume` take a run's name as `report` and `compare` do: its newest run, looked for
    in the current folder, then in runs/; they say which run that is."""
    monkeypatch.chdir(tmp_path)
    older = api.train(str(tiny_recipe), ["train.steps=5"], runs_dir="runs", quiet=True)
    newer = api.train(str(tiny_recipe), ["train.steps=5"], runs_dir="runs", quiet=True)
    assert older.dir != newer.dir
    code, out, err = run_cli("eval", "tiny", "--metric", "d-roc-auc", "-n", "32", "-q")
    assert code == 0 and f"tiny: its newest run, {newer.dir}" in err, err
    assert [r["metric"] for r in newer.files.read_metrics() if r["kind"] == "eval"] == ["d-roc-auc"]
    assert not [r for r in older.files.read_metrics() if r["kind"] == "eval"]
    code, out, err = run_cli("sample", "runs/tiny", "a red circle", "-n", "1", "-o", "grid.png")
    assert code == 0 and f"runs/tiny: its newest run, {newer.dir}" in err, err
    code, out, err = run_cli("run", "--resume", "tiny", "--set", "train.steps=10", "-q")
    assert code == 0, err
    assert latest_checkpoint(newer.checkpoints.folder)[0] == 10 and latest_checkpoint(older.checkpoints.folder)[0] == 5
    code, out, err = run_cli("eval", "nope")
    assert code == 2 and "no finished run named nope-<timestamp> in ./ or runs/" in err, err


def test_a_run_made_with_relative_paths_works_from_any_folder(tiny_recipe, tmp_path, run_cli, monkeypatch):
    """A path setting is pinned absolute in the run's recipe: `prompts_file = "prompts.txt"` written from one folder
    made the run unreadable (file not found) from every other."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "prompts.txt").write_text("a red circle\n")
    monkeypatch.chdir(project)
    run = api.train(
        str(tiny_recipe), ["train.steps=5", 'sample.prompts_file="prompts.txt"'], runs_dir="runs", quiet=True
    )
    recipe = (run.dir / "recipe.toml").read_text()
    assert f'prompts_file = "{project / "prompts.txt"}"' in recipe, recipe
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("sample", project / run.dir, "a blue square", "-n", "1", "-o", "grid.png")
    assert code == 0, err
    code, out, err = run_cli("run", "--resume", project / run.dir, "--set", "train.steps=6", "-q")
    assert code == 0, err


def test_ctrl_c_in_the_final_evaluation_prints_the_command_that_finishes_it(tiny_recipe, tmp_path, monkeypatch, capsys):
    import dalle_kit.tools.evaluate as evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    settings = ["train.steps=10", 'eval.metrics=["d-roc-auc"]', "eval.num_samples=32"]
    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "compute_metrics", interrupted)
        with pytest.raises(KeyboardInterrupt):
            api.train(str(tiny_recipe), settings, runs_dir=tmp_path / "runs")
    (run_dir,) = (tmp_path / "runs").iterdir()
    (command,) = re.findall(r"final evaluation stopped; finish it with: (.+)", capsys.readouterr().out)
    assert shlex.split(command)[-3:] == ["run", "--resume", str(run_dir)]
    run = api.train(None, resume=run_dir, quiet=True)
    assert list(run.results) == ["d-roc-auc"]


def test_metric_rows_that_are_not_objects_are_skipped(tmp_path):
    """A damaged metrics file (random bytes, a stray number on a line) gives the rows that are JSON objects only."""
    from dalle_kit.rundir import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "time": 0.5}\n5\n[1, 2]\n"text"\n\xff\xfe{\n{"step": 2}\n')
    assert read_jsonl(path) == [{"step": 1, "time": 0.5}, {"step": 2}]
