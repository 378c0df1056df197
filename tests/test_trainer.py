"""The core trainer and its training events: a plugin package brings a new kind of part, a pipeline on the
trainer and a step-end hook, pip-installed and used in a recipe with no core change; early stopping through
``request_stop``; registration refuses a pipeline Config without the common [train] settings and a kind
defined twice."""

from __future__ import annotations

import json
import types

import attrs

from conftest import SHAPES_16, TINY, write_recipe

import dalle_kit
from dalle_kit import api
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins import gan

PAINT = (
    """\
name = "paint"
pipeline = "paint"
seed = 0

"""
    + SHAPES_16
    + """
[painter]
name = "linear-painter"

[objective]
name = "mse"

[train]
steps = 40
batch_size = 32
log_every = 10
checkpoint_every = 20

[sample]
prompts = ["a red circle", "a blue square"]
every = 20
per_prompt = 2
"""
)


def test_a_plugin_brings_a_new_kind_a_pipeline_and_a_step_hook(third_party, tmp_path, run_cli):
    registry = third_party(select="family")
    assert registry.problems == []
    assert registry.kinds["painter"].__module__ == "dalle_kit_family"
    assert registry.kind_plugins["painter"].distribution == "dalle-kit-family"
    painter = registry.parts["painter"]["linear-painter"]
    check_part(painter.cls, registry=registry)  # the kind's own conformance check runs
    for objective in registry.parts["paint_objective"].values():  # the generic network checks on a plugin's kind
        check_part(objective.cls, registry=registry)

    recipe = write_recipe(tmp_path, PAINT)
    run = api.train(str(recipe), runs_dir=tmp_path / "runs", quiet=True, registry=registry)
    steps = [line.split() for line in (run.dir / "family-steps.txt").read_text().splitlines()]
    assert [int(s[0]) for s in steps] == list(range(1, 41))  # the hook saw every step
    losses = [
        r["loss"] for r in map(json.loads, (run.dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"
    ]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]  # it learns (measured 0.142 -> 0.077)
    assert (run.dir / "samples" / "step-00000020.png").exists() and (run.dir / "samples" / "step-00000040.png").exists()
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == [
        "step-00000020.safetensors",
        "step-00000040.safetensors",
    ]
    assert "[hooks.family-log]\nevery = 1\n" in (run.dir / "recipe.toml").read_text()  # its default, recorded


def test_a_hook_plugin_declares_its_recipe_table_and_a_pipeline_samples_with_set(
    third_party, tmp_path, run_cli, monkeypatch
):
    """``[hooks.family-log]`` is the family plugin's own table: read by its hook, validated like a part's settings
    (one line for a misspelled key or a table no plugin declares); ``sample --set`` changes the family's drawing."""
    registry = third_party(select="family")
    assert list(registry.settings) == ["family-log"]
    monkeypatch.setattr("dalle_kit.registry._cached", {None: registry, "family": registry})
    monkeypatch.setenv("DALLE_KIT_PLUGINS", "family")
    body = PAINT.replace('name = "mse"', 'name = "l1"').replace("steps = 40", "steps = 12")
    recipe = write_recipe(tmp_path, body + "\n[hooks.family-log]\nevery = 5\n")
    code, out, err = run_cli("run", recipe, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    steps = [int(line.split()[0]) for line in (run_dir / "family-steps.txt").read_text().splitlines()]
    assert steps == [5, 10]  # every 5th step, as the recipe's table asked
    for table, key in [("[hooks.family-log]\nevry = 5\n", "evry"), ("[hooks.famly-log]\nevery = 5\n", "famly-log")]:
        bad = write_recipe(tmp_path, body + "\n" + table, "bad.toml")
        code, out, err = run_cli("recipe", "check", bad)
        assert code == 2 and key in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, out, err = run_cli("run", write_recipe(tmp_path, body + "\n[hooks.family-log]\nevery = 0\n", "zero.toml"))
    assert code == 2 and "[hooks.family-log]" in err and "every" in err, err

    images = {}
    for contrast in ("1.0", "0.5"):
        out_png = tmp_path / f"contrast-{contrast}.png"
        code, out, err = run_cli(
            "sample", run_dir, "a red circle", "-n", "2", "-o", out_png, "--set", f"train.contrast={contrast}"
        )
        assert code == 0, err
        images[contrast] = out_png.read_bytes()
    assert images["1.0"] != images["0.5"]  # the sampler setting reached the family's drawing


def test_a_bad_part_of_a_plugin_kind_is_refused_before_any_run_directory(third_party, tmp_path, run_cli, monkeypatch):
    registry = third_party(select="family")
    monkeypatch.setattr("dalle_kit.registry._cached", {None: registry, "family": registry})
    monkeypatch.setenv("DALLE_KIT_PLUGINS", "family")
    recipe = write_recipe(tmp_path, PAINT.replace('name = "linear-painter"', 'name = "linear-paintr"'))
    code, out, err = run_cli("run", recipe, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "[painter] name" in err and "did you mean 'linear-painter'" in err
    bad = write_recipe(
        tmp_path, PAINT.replace('name = "linear-painter"', 'name = "linear-painter"\ninit_scale = "big"'), "bad.toml"
    )
    code, out, err = run_cli("recipe", "check", bad)
    assert code == 2 and "init_scale" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _event_plugin(**hooks):
    module = types.ModuleType("events_plugin")
    for name, func in hooks.items():
        setattr(module, name, dalle_kit.hookimpl(func))
    return module


def test_an_early_stopper_stops_with_a_checkpoint_and_resume_finishes(tmp_path):
    seen = []

    def train_step_end(trainer, step, values):
        seen.append(step)
        if step == 7 and not trainer.run.dir.joinpath("stopped-once").exists():
            trainer.run.dir.joinpath("stopped-once").write_text("")
            trainer.request_stop("loss plateau")

    def train_end(trainer, step, finished):
        seen.append(("end", step, finished))

    registry = Registry.discover(
        select="", extra=[("stopper", _event_plugin(train_step_end=train_step_end, train_end=train_end))]
    )
    assert registry.problems == []
    recipe = write_recipe(tmp_path, TINY.replace("steps = 30", "steps = 12"))
    run = api.train(str(recipe), runs_dir=tmp_path / "runs", quiet=True, registry=registry)
    assert seen == [1, 2, 3, 4, 5, 6, 7, ("end", 7, False)]
    assert (run.dir / "checkpoints" / "step-00000007.safetensors").exists()
    seen.clear()
    api.train(resume=run.dir, quiet=True, registry=registry)
    assert seen == [8, 9, 10, 11, 12, ("end", 12, True)]


def test_run_evaluated_fires_for_mid_run_and_final_evaluation(tmp_path):
    rows = []

    def run_evaluated(run, step, results):
        rows.append((step, sorted(results)))

    registry = Registry.discover(select="", extra=[("listener", _event_plugin(run_evaluated=run_evaluated))])
    body = TINY.replace("steps = 30", "steps = 10") + '\n[eval]\nmetrics = ["d-roc-auc"]\nnum_samples = 16\nevery = 5\n'
    api.train(str(write_recipe(tmp_path, body)), runs_dir=tmp_path / "runs", quiet=True, registry=registry)
    assert rows == [(5, ["d-roc-auc"]), (10, ["d-roc-auc"])]


def test_pipeline_config_without_the_common_train_settings_is_a_problem():
    class Loop(dalle_kit.Pipeline):
        name = "loop"

        @attrs.frozen
        class Config:
            steps: int = dalle_kit.param(10, "steps")

    module = types.ModuleType("loop_plugin")
    module.register_pipelines = dalle_kit.hookimpl(lambda register: register(Loop))
    registry = Registry.discover(select="", extra=[("loop", module)])
    assert "loop" not in registry.parts["pipeline"]
    [problem] = registry.problems
    assert "Config lacks the [train] settings batch_size, log_every, checkpoint_every" in problem.cause
    assert "subclass dalle_kit.TrainConfig" in problem.fix


def test_a_kind_defined_twice_or_a_part_of_an_unknown_kind_is_a_problem():
    class Generator2(dalle_kit.Part):
        kind = "generator"

    class Orphan(dalle_kit.Part):
        kind = "nowhere"
        name = "orphan"

    module = types.ModuleType("kinds_plugin")
    module.register_kinds = dalle_kit.hookimpl(lambda register: register(Generator2))
    module.register_parts = dalle_kit.hookimpl(lambda register: register(Orphan))
    registry = Registry.discover(select="", extra=[("kinds", module)])
    causes = [p.cause for p in registry.problems]
    assert any("kind 'generator' is already defined by gan.kinds (dalle-kit)" in c for c in causes)
    assert any("has kind 'nowhere', which no installed plugin defines" in c for c in causes)
    assert registry.kinds["generator"] is gan.Generator
