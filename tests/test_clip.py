"""The CLIP parts: `clip-pretrain` learns and resumes exactly, `clip` loads its weights (or a local open_clip
checkpoint) and fails in one line on an uncached tag offline, `clip-score` tells matched from shuffled pairs,
and a GAN trains on the pre-trained text encoder."""

from __future__ import annotations

import json
import tomllib
import math
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

import dalle_kit
from dalle_kit import api
from dalle_kit.tools.sample import sample as draw_grid
from dalle_kit.tools.cache import file_digest
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.evaluation import Evaluation
from dalle_kit.recipe import load_recipe
from dalle_kit.registry import Registry, get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import sampler
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins.clip.models import CONFIG_FILE, WEIGHTS_FILE, tiny_config
from dalle_kit_plugins.data.shapes import Shapes

REGISTRY = Registry.discover(select="")
CLIP = REGISTRY.parts["text_encoder"]["clip"].cls
CLIP_SCORE = REGISTRY.parts["metric"]["clip-score"].cls
# A small CLIP and little data: about 15 seconds on one core (contrastive_acc 0.03 -> 0.18 here).
BRIEF = [
    "data.train_size=2048",
    "data.test_size=256",
    "train.steps=160",
    "train.batch_size=64",
    "train.width=64",
    "train.embed_dim=64",
    "train.vision_layers=2",
    "train.text_layers=2",
    "train.warmup=10",
    "train.log_every=20",
    "train.checkpoint_every=80",
]
TINY_ARCH = tiny_config(embed_dim=32, width=32, vision_layers=1, text_layers=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("clip-runs")


@pytest.fixture(scope="module")
def pretrained(runs) -> Run:
    return api.train("shapes-clip-pretrain", [*BRIEF, 'name="clip-brief"'], runs_dir=runs, quiet=True)


def test_pretrain_learns_and_writes_an_open_clip_folder(pretrained):
    rows = [r for r in pretrained.files.read_metrics() if r["kind"] == "train"]
    assert [r["step"] for r in rows] == list(range(20, 161, 20))
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["contrastive_acc"] > rows[0]["contrastive_acc"] + 0.05, [r["contrastive_acc"] for r in rows]
    # the exported weights are the latest checkpoint's model, loadable by open_clip itself
    exported = load_file(pretrained.dir / WEIGHTS_FILE)
    state = load_state(latest_checkpoint(pretrained.checkpoints.folder)[1])
    assert exported.keys() == state["models"]["clip"].keys()
    assert all(torch.equal(exported[k], state["models"]["clip"][k]) for k in exported)
    assert json.loads((pretrained.dir / CONFIG_FILE).read_text())["model_cfg"]["embed_dim"] == 64
    open_clip.create_model(f"local-dir:{pretrained.dir}")
    with pytest.raises(dalle_kit.UserError, match="draws no images"):
        sampler(pretrained)


def test_a_run_that_draws_nothing_gets_no_dead_end_hint(pretrained, run_cli):
    """`eval` and the report named metrics "that suit shapes" for a CLIP run, a command that then failed: both now
    say the pipeline draws no images and give the command that says what its runs are for, which works."""
    for args in ([], ["--metric", "fid"]):
        code, _, err = run_cli("eval", pretrained.dir, *args)
        assert code == 2 and "pipeline 'clip-pretrain' draws no images" in err and "--metric" not in err, err
    code, out, _ = run_cli("plugins", "show", "clip-pretrain")  # the hint's command, minus the venv's path
    assert code == 0 and "clip-pretrain" in out
    from dalle_kit.tools.report import write_report

    text = write_report(pretrained.dir).read_text()
    assert "No evaluations yet" not in text and "No sample grids yet" not in text
    assert "No scores: pipeline &#x27;clip-pretrain&#x27; draws no images" in text
    assert "plugins show clip-pretrain</p>" in text  # the command ends the line: nothing to copy with it
    assert "No sample grids: pipeline &#x27;clip-pretrain&#x27; draws no images." in text


def test_pretrain_resume_matches_uninterrupted(tmp_path, run_cli):
    brief = [
        "data.train_size=256",
        "data.test_size=64",
        "train.steps=8",
        "train.batch_size=16",
        "train.width=32",
        "train.embed_dim=32",
        "train.vision_layers=1",
        "train.text_layers=1",
        "train.warmup=2",
        "train.log_every=2",
        "train.checkpoint_every=4",
        "train.eval_pairs=32",
    ]
    full = api.train("shapes-clip-pretrain", brief, runs_dir=tmp_path / "full", quiet=True)
    part = api.train("shapes-clip-pretrain", brief, stop_at=3, runs_dir=tmp_path / "part", quiet=True)
    assert latest_checkpoint(part.checkpoints.folder)[0] == 3
    code, _, err = run_cli("run", "--resume", part.dir, "-q")
    assert code == 0, err
    a, b = (load_state(latest_checkpoint(r.checkpoints.folder)[1]) for r in (full, part))
    assert a["step"] == b["step"] == 8
    for key, tensor in a["models"]["clip"].items():
        assert torch.equal(tensor, b["models"]["clip"][key]), f"{key} differs after resume"
    for index, values in a["optim"]["clip"]["state"].items():
        for name, value in values.items():
            assert torch.equal(value, b["optim"]["clip"]["state"][index][name])
    rows_a, rows_b = full.files.read_metrics(), Run.open(part.dir, get_registry()).files.read_metrics()
    assert [(r["step"], r["loss"], r["contrastive_acc"]) for r in rows_a] == [
        (r["step"], r["loss"], r["contrastive_acc"]) for r in rows_b
    ]


def test_clip_encoder_loads_the_pretrained_run(pretrained, runs):
    # a run-name prefix resolves to the newest finished run of that name
    raw = CLIP(CLIP.Config(pretrained=str(runs / "clip-brief"), normalize=False))
    assert raw.dim == 64 and not raw.trainable and raw.clip.visual is None
    reference = open_clip.create_model(f"local-dir:{pretrained.dir}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{pretrained.dir}")
    captions = ["a red circle", "a small blue square in the top left", "a green triangle"]
    with torch.no_grad():
        expected = reference.encode_text(tokenizer(captions))
        assert torch.allclose(raw.encode(captions), expected, atol=1e-5)
        unit = CLIP(CLIP.Config(pretrained=str(pretrained.dir))).encode(captions)
    assert torch.allclose(unit, torch.nn.functional.normalize(expected, dim=-1) * 8.0, atol=1e-4)
    text_tower = {k: v for k, v in reference.state_dict().items() if not k.startswith("visual.")}
    assert raw.clip.state_dict().keys() == text_tower.keys()
    check_part(CLIP, CLIP.Config(pretrained=str(pretrained.dir)))
    check_part(CLIP, CLIP.Config(pretrained=str(pretrained.dir), trainable=True))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_clip_encoder_loads_a_local_checkpoint_file(tmp_path, suffix):
    torch.manual_seed(3)
    source = open_clip.CLIP(**TINY_ARCH).eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    weights = tmp_path / f"model{suffix}"
    torch.save(state, weights) if suffix == ".pt" else save_file(state, str(weights))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    encoder = CLIP(CLIP.Config(model=str(arch), pretrained=str(weights), normalize=False))
    loaded = encoder.clip.state_dict()
    assert loaded.keys() == {k for k in state if not k.startswith("visual.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    with torch.no_grad():
        assert torch.allclose(
            encoder.encode(["a red circle"]), source.encode_text(encoder.tokenizer(["a red circle"])), atol=1e-6
        )
    # weights that do not fit the architecture: one line naming the key and the fix
    with pytest.raises(dalle_kit.UserError) as err:
        CLIP(CLIP.Config(pretrained=str(weights)))  # model "" = the default tiny CLIP, wider than these weights
    assert (
        "\n" not in str(err.value)
        and "[text_encoder] pretrained" in str(err.value)
        and "set [text_encoder] model" in str(err.value)
    )


def test_uncached_tag_fails_in_one_line_offline(no_network, tmp_path, run_cli, runs):
    with pytest.raises(dalle_kit.UserError) as err:
        CLIP(CLIP.Config(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    message = str(err.value)
    assert (
        "\n" not in message
        and "[text_encoder] pretrained 'laion2b_s34b_b79k'" in message
        and "not in the local cache" in message
    )
    with pytest.raises(dalle_kit.UserError, match="set \\[text_encoder\\] model"):
        CLIP(CLIP.Config(pretrained="laion2b_s34b_b79k"))  # a tag needs its architecture
    with pytest.raises(dalle_kit.UserError, match="no finished run named nothing-here") as err:
        CLIP(CLIP.Config(pretrained=str(tmp_path / "nothing-here")))
    assert "train that run first" in str(err.value)
    with pytest.raises(
        dalle_kit.UserError
    ) as err:  # runs of a registered recipe: the hint is the command that trains one
        CLIP(CLIP.Config(pretrained=str(tmp_path / "runs" / "shapes-clip-pretrain")))
    assert f"run shapes-clip-pretrain --runs-dir {tmp_path / 'runs'}`, or give" in str(err.value)
    code, _, err_text = run_cli(
        "run",
        "shapes-gan-clip",
        "--set",
        "text_encoder.model=ViT-B-32",
        "--set",
        "text_encoder.pretrained=laion2b_s34b_b79k",
        "--set",
        "data.train_size=64",
        "--runs-dir",
        runs / "cli",
        "-q",
    )
    assert code == 2 and "not in the local cache" in err_text and "Traceback" not in err_text


def test_clip_score_ranks_matched_above_shuffled(pretrained, runs):
    data = Shapes(Shapes.Config(train_size=64, test_size=300))
    test = data.load("test")
    evaluation = Evaluation(data, num_samples=300, generated=test.images, prompts=test.captions)
    metric = CLIP_SCORE(CLIP_SCORE.Config(pretrained=str(runs / "clip-brief")))
    metric.check(evaluation)
    result = metric.compute(evaluation).check("clip-score")
    values = result.values
    assert values["clip_score"] == pytest.approx(values["clip_score_real"])  # the "generated" images are the real ones
    assert values["clip_score_real"] > values["clip_score_real_shuffled"] + 10, values
    assert str(pretrained.dir) in result.protocol.extractor
    assert result.protocol.weights_hash == file_digest(pretrained.dir / WEIGHTS_FILE)
    for bad, problem in [("", "pretrained is empty"), (str(runs / "missing"), "no finished run named missing")]:
        with pytest.raises(dalle_kit.UserError, match=problem) as err:
            CLIP_SCORE(CLIP_SCORE.Config(pretrained=bad)).check(evaluation)
        assert "\n" not in str(err.value)


def test_r_precision_ranks_own_captions_first_and_can_fail(pretrained, runs):
    """Real test images with their own captions rank them first far above chance; the same images with shuffled
    prompts fall to about chance; K above the distinct captions is one line."""
    R_PRECISION = REGISTRY.parts["metric"]["r-precision"].cls
    data = Shapes(Shapes.Config(train_size=64, test_size=300))
    test = data.load("test")
    metric = R_PRECISION(R_PRECISION.Config(pretrained=str(runs / "clip-brief"), candidates=10))
    own = metric.compute(Evaluation(data, num_samples=300, generated=test.images, prompts=test.captions)).values
    assert own["r_precision"] == own["r_precision_real"] and own["r_precision_chance"] == 0.1
    assert own["r_precision"] > 0.4, own
    shuffled = [test.captions[(i + 1) % 300] for i in range(300)]
    wrong = metric.compute(Evaluation(data, num_samples=300, generated=test.images, prompts=shuffled)).values
    assert wrong["r_precision"] < 0.2, wrong
    too_many = R_PRECISION(R_PRECISION.Config(pretrained=str(runs / "clip-brief"), candidates=10_000))
    with pytest.raises(dalle_kit.UserError, match=r"\[eval.r-precision\] candidates = 10000, but the reference"):
        too_many.compute(Evaluation(data, num_samples=300, generated=test.images, prompts=test.captions))
    with pytest.raises(dalle_kit.UserError, match=r"\[eval.r-precision\] candidates = 10000, but the reference"):
        too_many.check(Evaluation(data, num_samples=300))  # before any training: a run's check_run calls it


def test_r_precision_does_not_rank_a_caption_against_its_own_spelling(pretrained, runs):
    """Captions that differ only in case or spacing read the same to the CLIP (the same tokens: a tie, which would
    count as a miss): they are never each other's distractor."""
    from collections import Counter

    from dalle_kit_plugins.clip.r_precision import r_precision

    R_PRECISION = REGISTRY.parts["metric"]["r-precision"].cls
    data = Shapes(Shapes.Config(train_size=64, test_size=300))
    test = data.load("test")
    caption, _ = Counter(test.captions).most_common(1)[0]
    images = test.images[[i for i, c in enumerate(test.captions) if c == caption]]
    other = next(c for c in test.captions if c.split()[-1] != caption.split()[-1])  # another shape
    metric = R_PRECISION(R_PRECISION.Config(pretrained=str(runs / "clip-brief"), candidates=4))
    clip = metric.clip(Evaluation(data, num_samples=len(images), generated=images, prompts=[caption] * len(images)))
    pool = sorted([caption, caption.upper(), "  " + caption.title() + " ", other])
    hits = r_precision(clip, images, [caption] * len(images), pool, 4, torch.Generator().manual_seed(0))
    assert len(images) >= 2 and hits.float().mean() > 0.5, (caption, other, hits)  # ranked against `other` alone


def test_r_precision_expected_is_the_mean_over_every_draw(pretrained, runs):
    """`expected = true` gives each image's exact chance of ranking first over every draw of distractors: the mean of
    many seeded draws converges to it, it is never outside one draw's 0/1, and it needs no seed."""
    from dalle_kit_plugins.clip.r_precision import all_below, r_precision

    assert all_below(5, 10, 1) == 0.5 and all_below(2, 10, 3) == 0.0 and all_below(9, 9, 4) == 1.0
    assert all_below(4, 6, 2) == pytest.approx(6 / 15)
    R_PRECISION = REGISTRY.parts["metric"]["r-precision"].cls
    data = Shapes(Shapes.Config(train_size=64, test_size=300))
    test = data.load("test")
    images, captions = test.images[:60], test.captions[:60]
    metric = R_PRECISION(R_PRECISION.Config(pretrained=str(runs / "clip-brief"), candidates=10, expected=True))
    evaluation = Evaluation(data, num_samples=60, generated=images, prompts=captions)
    pool = metric.pool(evaluation)
    clip = metric.clip(evaluation)
    exact = r_precision(clip, images, captions, pool, 10, None)
    draws = torch.stack(
        [r_precision(clip, images, captions, pool, 10, torch.Generator().manual_seed(s)) for s in range(200)]
    )
    assert ((exact >= 0) & (exact <= 1)).all() and 0.05 < float(exact.mean()) < 0.95, exact
    assert float((draws.mean(0) - exact).abs().max()) < 0.15, (draws.mean(0), exact)  # per image, 200 draws
    assert float(draws.mean()) == pytest.approx(float(exact.mean()), abs=0.02)
    values = metric.compute(evaluation).values
    assert values["r_precision"] == pytest.approx(float(exact.mean()))


def test_r_precision_too_many_candidates_stops_before_the_run(run_cli, pretrained, runs, tmp_path):
    """A K the reference split cannot supply is refused by `dalle-kit run` in one line, before a run directory."""
    code, out, err = run_cli(
        "run",
        "shapes",
        "--runs-dir",
        tmp_path,
        "--set",
        "data.test_size=50",
        "--set",
        'eval.metrics=["r-precision"]',
        "--set",
        f"eval.r-precision.pretrained={json.dumps(str(runs / 'clip-brief'))}",
    )
    assert code == 2 and "candidates = 100, but the reference split has only" in err, (code, err)
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_gan_trains_on_the_pretrained_encoder(pretrained, runs):
    recipe = load_recipe("shapes-gan-clip", get_registry())
    assert recipe.parts["text_encoder"].config.pretrained == "runs/shapes-clip-pretrain"
    prefix = json.dumps(str(runs / "clip-brief"))  # a run-name prefix: the new run records the directory it meant
    overrides = [
        f"text_encoder.pretrained={prefix}",
        "data.train_size=512",
        "data.test_size=64",
        "generator.ngf=16",
        "discriminator.ndf=16",
        "train.steps=20",
        "train.batch_size=32",
        "train.log_every=5",
        "sample.every=0",
        "sample.per_prompt=2",
        'eval.metrics=["clip-score"]',
        "eval.num_samples=64",
        f"eval.clip-score.pretrained={prefix}",
    ]
    run = api.train("shapes-gan-clip", overrides, runs_dir=runs / "gan", quiet=True)
    recorded = load_recipe(run.dir, get_registry())
    assert recorded.parts["text_encoder"].config.pretrained == str(pretrained.dir)
    assert recorded.metric_settings["clip-score"].pretrained == str(pretrained.dir)
    rows = [r for r in run.files.read_metrics() if r["kind"] == "train"]
    assert len(rows) == 4 and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)
    scored = run.results["clip-score"].values  # the recipe's [eval.clip-score] table reaches the metric
    assert 0 <= scored["clip_score"] <= 100 and scored["clip_score_real"] > scored["clip_score_real_shuffled"]
    # the frozen encoder is saved unchanged with the GAN, so the run keeps the text tower it trained with
    saved = load_state(latest_checkpoint(run.checkpoints.folder)[1])["models"]["text_encoder"]
    exported = load_file(pretrained.dir / WEIGHTS_FILE)
    assert all(torch.equal(v, exported[k.removeprefix("clip.")]) for k, v in saved.items())
    images = draw_grid(run.dir, ["a red circle"], n=2, out=runs / "gan" / "sample.png")
    assert images.is_file()


def test_settings_of_a_metric_not_scored_do_not_stop_the_run(run_cli, tmp_path):
    """An ``[eval.r-precision]`` table naming a CLIP run that does not exist yet stops a run that scores r-precision
    (one line, no run directory), not one whose ``[eval] metrics`` leaves it out: that run trains and keeps the
    setting as written, for a later `dalle-kit eval` to resolve."""
    missing = ["--set", 'eval.r-precision.pretrained="runs/no-such-clip"', "--set", "train.steps=1"]
    code, out, err = run_cli(
        "run", "shapes", "--runs-dir", tmp_path / "a", *missing, "--set", 'eval.metrics=["r-precision"]'
    )
    assert code == 2 and "no finished run named no-such-clip" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a").exists()
    code, out, err = run_cli("run", "shapes", "--runs-dir", tmp_path / "b", *missing, "--set", "sample.every=0")
    assert code == 0, err
    (run_dir,) = (tmp_path / "b").iterdir()
    recorded = tomllib.loads((run_dir / "recipe.toml").read_text())
    assert recorded["eval"]["metrics"] == [] and recorded["eval"]["r-precision"]["pretrained"] == "runs/no-such-clip"


def test_eval_metrics_on_clip_pretrain_are_refused_before_any_work(run_cli, tmp_path):
    """It draws no images: [eval] metrics used to train to the end and then fail; now the recipe is refused."""
    recipe = Path(__file__).parent.parent / "recipes" / "shapes-clip-pretrain.toml"
    for command in (["recipe", "check", recipe], ["run", recipe, "--runs-dir", tmp_path / "runs"]):
        code, out, err = run_cli(*command, "--set", 'eval.metrics=["fid"]')
        assert code == 2 and "[eval] metrics: pipeline 'clip-pretrain' draws no images" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
