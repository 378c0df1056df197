"""Every class of recipe error: exit code 2, one line naming the file, the key and the fix, no traceback."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from dalle_kit import hints

from conftest import TINY, TUXPAINT_ROOT, write_recipe


def one_line_error(code, out, err):
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("dalle-kit: error: ")
    return lines[0]


def test_valid_recipe_checks(run_cli, tiny_recipe):
    code, out, err = run_cli("recipe", "check", tiny_recipe)
    assert code == 0, err
    assert "ok" in out and "generator=dcgan" in out


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            '[loss]\nname = "hinge"',
            '[los]\nname = "hinge"',
            ["[los]", "unknown section", "did you mean 'loss'", "fix:"],
        ),
        ("ngf = 16", "ngf_ = 16", ["[generator] key 'ngf_'", "unknown key", "did you mean 'ngf'", "fix:"]),
        (
            "ngf = 16",
            'ngf = "16"',
            ["[generator] key 'ngf'", "expected integer, got str", "fix: write ngf = <integer>"],
        ),
        ("steps = 30", "steps = 2.5", ["[train] key 'steps'", "expected integer"]),
        (
            'name = "hinge"',
            'name = "hnge"',
            [
                "[loss] name",
                "unknown loss 'hnge'",
                "did you mean 'hinge'",
                "use one of: bce, began, dragan, hinge, lsgan, minimax",
            ],
        ),
        (
            '[generator]\nname = "dcgan"',
            '[generator]\nname = "dcgen"',
            ["[generator] name", "unknown generator 'dcgen'", "did you mean 'dcgan'"],
        ),
        ('pipeline = "gan"', 'pipeline = "gna"', ["key 'pipeline'", "unknown pipeline 'gna'", "did you mean 'gan'"]),
        ("steps = 30", "steps = 0", ["[train] key 'steps'", "invalid value", "must be > 0", "plugins show gan`"]),
        (
            "per_prompt = 2",
            'prompts_file = "no/such/prompts.txt"',
            ["[sample] key 'prompts_file'", "file not found", "no/such/prompts.txt"],
        ),
        ('name = "tiny"', 'nme = "tiny"', ["key 'nme'", "unknown top-level key", "did you mean 'name'"]),
        ('name = "tiny"\n', "", ["key 'name'", "is required"]),
        (
            'pipeline = "gan"\n',
            "",
            [
                "key 'pipeline'",
                "is required",
                'write pipeline = "NAME" at the top of the file, before any [table]',
                "NAME one of: clip-pretrain, dalle, diffusion, dvae, gan",
            ],
        ),
        (
            'pipeline = "gan"\n',
            '[pipeline]\nname = "gan"\n',
            ["key 'pipeline'", "got a [pipeline] table", "NAME one of: clip-pretrain, dalle, diffusion, dvae, gan"],
        ),
        (
            '[text_encoder]\nname = "bow"',
            "[text_encoder]",
            ["[text_encoder] name", "missing", "add [text_encoder] with name = one of: bow"],
        ),
        ("betas", "betas = [0.5, 0.999]\nbetas2", ["[train] key 'betas2'", "unknown key"]),
        ("seed = 0", "seed = [", ["invalid TOML"]),
        ("seed = 0", 'seed = "zero"', ["key 'seed'", "expected integer, got str"]),
        ('name = "tiny"', 'name = "tiny"\ndevice = "tpu"', ["device 'tpu'", "use 'auto', 'cpu', 'cuda'"]),
    ],
)
def test_recipe_error_classes(run_cli, tmp_path, old, new, expected):
    body = TINY.replace(old, new, 1) if old != "betas" else TINY.replace("log_every = 5", "log_every = 5\nbetas2 = 1")
    assert body != TINY
    path = write_recipe(tmp_path, body)
    line = one_line_error(*run_cli("recipe", "check", path))
    assert str(path) in line or "--set" in line or "device" in line
    for fragment in expected:
        assert fragment in line, (fragment, line)


def test_missing_recipe_file(run_cli, tmp_path):
    missing = tmp_path / "nope.toml"
    line = one_line_error(*run_cli("run", missing))
    assert str(missing) in line and "file not found" in line and "fix:" in line


def test_unknown_builtin_recipe_name(run_cli):
    line = one_line_error(*run_cli("run", "shapez"))
    assert "did you mean 'shapes'" in line


def test_run_refuses_before_any_work(run_cli, tmp_path):
    path = write_recipe(tmp_path, TINY.replace("ndf = 16", "ndf = -1"))
    line = one_line_error(*run_cli("run", path, "--runs-dir", tmp_path / "runs"))
    assert "[discriminator] key 'ndf'" in line
    assert not (tmp_path / "runs").exists(), "a run directory was made for an invalid recipe"
    # the fix names the part, and that command describes its parameters
    assert "plugins show dcgan`" in line, line
    code, out, _ = run_cli("plugins", "show", "dcgan")
    assert code == 0 and "ndf (" in out


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.steps=abc", "--set train.steps=abc: [train] key 'steps': expected integer, got str \"abc\""),
        ("train.stepz=5", "[train] key 'stepz': unknown key (did you mean 'steps'?)"),
        ("trainsteps", "expected KEY=VALUE"),
        ("generator.name=nope", "--set generator.name=nope: [generator] name: unknown generator 'nope'"),
        ('eval.metrics=["nope"]', "--set eval.metrics=[\"nope\"]: [eval] metrics: unknown metric 'nope'"),
        ("pipeline=nope", "--set pipeline=nope: key 'pipeline': unknown pipeline 'nope'"),
        ("eval.kid.bogus=1", "--set eval.kid.bogus=1: [eval.kid] key 'bogus': unknown key"),
        ("hooks.nope.x=1", "--set hooks.nope.x=1: [hooks.nope]: no installed plugin declares these settings"),
        ("generator.name=1", "--set generator.name=1: [generator] name: expected string, got int 1; fix: use one of: "),
    ],
)
def test_bad_overrides(run_cli, tiny_recipe, override, expected):
    """The error names the --set that gave the refused value (in whatever form the key is written), not the file."""
    line = one_line_error(*run_cli("recipe", "check", tiny_recipe, "--set", override))
    assert expected in line
    if override.startswith(("train.steps=", "generator", "eval", "pipeline", "hooks")):
        assert str(tiny_recipe) not in line, line


@pytest.mark.parametrize("override", ["train.steps=abc", "train.betas=0.5", "train.lr=fast"])
def test_a_refused_set_s_fix_is_a_set_that_works_as_printed(run_cli, tiny_recipe, override):
    line = one_line_error(*run_cli("recipe", "check", tiny_recipe, "--set", override))
    fix = line.split("; fix: for example ", 1)[1]
    words = shlex.split(fix)
    assert words[0] == "--set" and words[1].startswith(override.split("=")[0] + "="), line
    code, out, err = run_cli("recipe", "check", tiny_recipe, *words)
    assert code == 0, (line, err)


def test_a_part_name_of_the_wrong_type_is_told_names_that_work(run_cli, tiny_recipe):
    line = one_line_error(*run_cli("recipe", "check", tiny_recipe, "--set", "generator.name=1"))
    names = line.split("; fix: use one of: ", 1)[1].split(", ")
    assert "dcgan" in names, line
    assert run_cli("recipe", "check", tiny_recipe, "--set", "generator.name=dcgan")[0] == 0


@pytest.mark.parametrize("key, bad", [("betas", '"fast"'), ("lr", '"fast"')])
def test_a_refused_value_s_fix_is_a_line_that_works_in_the_file(run_cli, tmp_path, key, bad):
    body = TINY.replace("log_every = 5", f"log_every = 5\n{key} = {bad}")
    line = one_line_error(*run_cli("recipe", "check", write_recipe(tmp_path, body)))
    example = line.split(", for example ", 1)[1]
    assert example.startswith(f"{key} = "), line
    code, out, err = run_cli("recipe", "check", write_recipe(tmp_path, body.replace(f"{key} = {bad}", example)))
    assert code == 0, (line, err)


def test_a_bad_value_in_the_file_is_the_file_s_fault_beside_a_set(run_cli, tiny_recipe, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_recipe.read_text().replace('name = "dcgan"\nngf', 'name = "nope"\nngf'))
    line = one_line_error(*run_cli("recipe", "check", path, "--set", "generator.ngf=8", "--set", "train.lr=1e-3"))
    assert line.startswith(f"dalle-kit: error: {path}: [generator] name: unknown generator 'nope'"), line


def test_overrides_apply(run_cli, tiny_recipe):
    code, out, err = run_cli(
        "recipe", "show", tiny_recipe, "--set", "train.steps=7", "--set", "loss.name=bce", "--set", "generator.ngf=8"
    )
    assert code == 0, err
    assert "steps = 7" in out and 'name = "bce"' in out and "ngf = 8" in out
    # defaults the recipe left out are filled in
    assert "lr = 0.0002" in out and "latent_dim = 32" in out


def test_sample_bad_run_dir(run_cli, tmp_path):
    line = one_line_error(*run_cli("sample", tmp_path, "a red circle"))
    assert "not a run directory" in line


def test_plugins_show_unknown(run_cli):
    line = one_line_error(*run_cli("plugins", "show", "dcgn"))
    assert "did you mean 'dcgan'" in line


def test_every_shipped_recipe_is_valid(run_cli, fashion_root, cifar_root, emoji_package, stamps_root):
    import tomllib
    from pathlib import Path

    recipes = sorted(
        p for p in (Path(__file__).parent.parent / "recipes").glob("*.toml") if not p.name.startswith("bench-")
    )
    assert {"shapes.toml", "cifar.toml", "cifar-sngan.toml", "shapes-resnet-hinge.toml"} <= {p.name for p in recipes}
    for path in recipes:
        top = tomllib.loads(path.read_text())
        if "base" in top and "pipeline" not in top:  # a bench grid (lucic-mnist.toml): tests/test_lucic.py loads those
            continue
        data = top.get("data", {}).get("name")
        # without Debian's Fashion-MNIST, its recipes are checked against IDX files in the official format
        extra = ["--set", f"data.root={fashion_root}"] if data == "fashion-mnist" and fashion_root is not None else []
        if data == "cifar10":  # CIFAR-10 cannot be fetched here: files in its format (tests/conftest.py)
            extra = ["--set", f"data.root={cifar_root}", "--set", "data.verify=false"]
        if data == "emoji":  # the npm package is fetched by hand: a small copy in its layout (tests/conftest.py)
            extra = ["--set", f"data.root={emoji_package['tgz']}"]
        if data == "tuxpaint" and not TUXPAINT_ROOT.is_dir():  # without Debian's stamps, a small tree in their layout
            extra = ["--set", f"data.root={stamps_root}"]
        code, out, err = run_cli("recipe", "check", path, *extra)
        assert code == 0, (path, err)


@pytest.mark.parametrize(
    "table, expected",
    [
        (
            "[eval.text-alignment]\nmin_probe_acc = 0.9",
            ["[eval.text-alignment] key 'min_probe_acc'", "unknown key", "did you mean 'min_probe_accuracy'"],
        ),
        (
            "[eval.text-alignment]\nmin_probe_accuracy = 2.0",
            ["[eval.text-alignment] key 'min_probe_accuracy'", "invalid value"],
        ),
        ("[eval.fld]\nx = 1", ["[eval.fld]", "unknown metric 'fld'", "did you mean 'fid'"]),
    ],
)
def test_metric_settings_errors(run_cli, tmp_path, table, expected):
    path = write_recipe(tmp_path, TINY + "\n" + table + "\n")
    line = one_line_error(*run_cli("recipe", "check", path))
    for part in expected:
        assert part in line, line


def test_metric_settings_reach_the_metric_and_the_resolved_recipe(tmp_path):
    from dalle_kit.tools.evaluate import build_metrics
    from dalle_kit.recipe import load_recipe
    from dalle_kit.registry import get_registry

    path = write_recipe(
        tmp_path, TINY + '\n[eval]\nmetrics = ["text-alignment"]\n[eval.text-alignment]\nmin_probe_accuracy = 0.9\n'
    )
    recipe = load_recipe(path, get_registry())
    metric = build_metrics(["text-alignment"], get_registry(), settings=recipe.metric_settings)["text-alignment"]
    assert metric.config.min_probe_accuracy == 0.9
    assert recipe.to_dict()["eval"]["text-alignment"] == {"min_probe_accuracy": 0.9}
    (tmp_path / "resolved.toml").write_text(recipe.dumps())
    assert load_recipe(tmp_path / "resolved.toml", get_registry()).metric_settings == recipe.metric_settings


@pytest.mark.parametrize("name", ["bench-fashion.toml", "lucic-fashion.toml"])  # a [grid], [[extra]] cells only
def test_a_bench_grid_given_to_recipe_check_says_to_use_bench(run_cli, name):
    grid = Path(__file__).resolve().parents[1] / "recipes" / name
    code, out, err = run_cli("recipe", "check", grid)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is a bench grid (base + [grid] or [[extra]] cells), not a recipe" in err
    assert f"{hints.dalle_kit('bench ' + hints.quote(str(grid)))} (add --dry-run" in err


def test_a_recipe_saved_with_a_byte_order_mark_reads_as_without(run_cli, tiny_recipe, tmp_path):
    """Windows editors save UTF-8 with a BOM; tomllib calls it an invalid statement at line 1, column 1."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + tiny_recipe.read_bytes())
    code, out, err = run_cli("recipe", "check", path)
    assert code == 0, err
