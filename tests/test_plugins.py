"""Third-party plugins installed with pip into a temporary location, discovered through entry points;
broken ones are reported with their distribution and cause while everything else keeps working."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from conftest import TINY, cli_subprocess, write_recipe

from dalle_kit import api
from dalle_kit.tools.sample import sample as draw_grid
from dalle_kit.registry import Registry
from dalle_kit_plugins import gan


def test_builtins_come_through_entry_points():
    eps = {ep.name: ep for ep in metadata.entry_points(group="dalle_kit")}
    assert {"text.bow", "gan.dcgan", "gan.losses", "data.shapes", "data.cifar10", "gan.pipeline", "gan.kinds"} <= set(
        eps
    )
    assert all(eps[n].dist.name == "dalle-kit" for n in ("text.bow", "gan.dcgan", "gan.pipeline"))
    registry = Registry.discover(select="")
    assert registry.parts["generator"]["dcgan"].plugin.distribution == "dalle-kit"
    assert registry.problems == []


def test_third_party_discovered_and_used_in_a_recipe(third_party, tmp_path):
    eps = {ep.name: ep.dist.name for ep in metadata.entry_points(group="dalle_kit")}
    assert eps["example"] == "dalle-kit-example"  # found by importlib.metadata, from the temporary install
    registry = third_party(select="example")
    info = registry.parts["generator"]["mlp"]
    assert (info.plugin.distribution, info.plugin.version) == ("dalle-kit-example", "0.2.0")
    assert registry.problems == []
    recipe = write_recipe(
        tmp_path,
        TINY.replace(
            '[generator]\nname = "dcgan"\nngf = 16\nlatent_dim = 32\ntext_embed = 16',
            '[generator]\nname = "mlp"\nhidden = 64',
        ),
    )
    run = api.train(
        str(recipe), ["train.steps=6", "sample.every=3"], runs_dir=tmp_path / "runs", quiet=True, registry=registry
    )
    assert (run.dir / "checkpoints" / "step-00000006.safetensors").exists()
    assert '"distribution": "dalle-kit-example"' in (run.dir / "parts.json").read_text()


def test_isolation_problems_are_reported(third_party):
    registry = third_party()
    lines = [p.line() for p in registry.problems]
    text = "\n".join(lines)
    assert (
        "broken (dalle-kit-broken 0.0.1): failed to import dalle_kit_broken: RuntimeError: this plugin is broken on purpose"
        in text
    )
    assert "clash (dalle-kit-clash 0.0.1): loss 'hinge' is already registered by gan.losses (dalle-kit" in text
    assert (
        "misspelled (dalle-kit-misspelled 0.0.1): 'register_generater' is not a dalle_kit hook (did you mean 'register_generators'?)"
        in text
    )
    assert "badsig (dalle-kit-badsig 0.0.1): invalid hook" in text and "config" in text
    assert (
        "notapart (dalle-kit-notapart 0.0.1):" in text
        and "is not a subclass of dalle_kit_plugins.gan.Generator" in text
    )
    assert "oldapi (dalle-kit-oldapi 0.0.1): built for dalle-kit hook API 0, this dalle-kit provides hook API 2" in text
    # the rest still works: the built-in hinge wins, the clashing plugin's other part arrives, the example loads
    assert registry.parts["loss"]["hinge"].plugin.distribution == "dalle-kit"
    assert registry.parts["loss"]["dcgan"].plugin.distribution == "dalle-kit-clash"
    assert "mlp" in registry.parts["generator"] and "not-a-generator" not in registry.parts["generator"]
    assert all(p.fix for p in registry.problems)


def test_selection_env_loads_only_named_plugins(third_party):
    assert third_party(select="").problems == []
    only = third_party(select="example,dalle-kit-clash")
    assert {p.plugin.name for p in only.problems} == {"clash"}
    assert "mlp" in only.parts["generator"]
    assert {p.name for p in only.plugins} >= {"example", "clash", "gan.dcgan"}


def test_cli_keeps_working_with_broken_plugins(plugin_site, tmp_path):
    listing = cli_subprocess("plugins", "list", site=plugin_site)
    assert listing.returncode == 0, listing.stderr
    assert "mlp" in listing.stdout and "dalle-kit-example 0.2.0" in listing.stdout
    assert "broken (dalle-kit-broken 0.0.1): failed to import" in listing.stdout
    assert "loss 'hinge' is already registered" in listing.stdout
    doctor = cli_subprocess("plugins", "doctor", site=plugin_site)
    broken = [line for line in doctor.stdout.splitlines() if "dalle-kit-broken" in line]
    fix = "  fix: fix the plugin or uninstall it: "  # with this environment's pip (a bare `pip` may be another's)
    assert doctor.returncode == 1 and any(
        line.startswith(fix) and line.endswith("pip uninstall dalle-kit-broken") for line in broken
    ), broken
    recipe = write_recipe(tmp_path, TINY)
    check = cli_subprocess("recipe", "check", str(recipe), site=plugin_site)
    assert check.returncode == 0, check.stderr
    run = cli_subprocess(
        "run", str(recipe), "--set", "train.steps=4", "--runs-dir", str(tmp_path / "runs"), "-q", site=plugin_site
    )
    assert run.returncode == 0, run.stderr
    assert "run directory:" in run.stdout
    # and with the selection variable the broken ones are not even imported
    quiet = cli_subprocess("plugins", "list", site=plugin_site, select="")
    assert "problems:" not in quiet.stdout and "  mlp " not in quiet.stdout  # the example plugin's part (not mlp-prior)


def test_plugins_show_lists_parameters(run_cli):
    code, out, err = run_cli("plugins", "show", "dcgan")
    assert code == 0, err
    assert "generator 'dcgan' from dalle-kit" in out and "discriminator 'dcgan' from dalle-kit" in out
    assert "ngf (integer, default 64): channels of the last hidden layer" in out
    assert "norm ('spectral' | 'batch' | 'none', default \"spectral\")" in out
    code, out, _ = run_cli("plugins", "show", "gan")
    assert "parameters ([train] keys):" in out and "steps (integer, default 3000)" in out


ISOLATION_CASES = {
    "broken": "failed to import dalle_kit_broken: RuntimeError",
    "clash": "loss 'hinge' is already registered by gan.losses",
    "misspelled": "'register_generater' is not a dalle_kit hook (did you mean 'register_generators'?)",
    "badsig": "invalid hook: register_losses() takes 'config', but the hook passes only 'register'",
    "notapart": "'NotAGenerator' registered as a generator is not a subclass of dalle_kit_plugins.gan.Generator",
    "oldapi": "built for dalle-kit hook API 0, this dalle-kit provides hook API 2",
}


@pytest.mark.parametrize("plugin", sorted(ISOLATION_CASES))
def test_each_isolation_case(plugin, third_party, monkeypatch, run_cli, tmp_path):
    registry = third_party(select=plugin)
    assert [p.plugin.name for p in registry.problems] == [plugin]
    assert ISOLATION_CASES[plugin] in registry.problems[0].line()
    monkeypatch.setenv("DALLE_KIT_PLUGINS", plugin)
    code, out, err = run_cli("plugins", "list")
    assert code == 0, err
    assert ISOLATION_CASES[plugin] in out and "dcgan" in out
    code, out, err = run_cli("plugins", "doctor")
    assert code == 1 and "fix:" in out
    run = api.train(
        str(write_recipe(tmp_path, TINY)), ["train.steps=3"], runs_dir=tmp_path / "runs", quiet=True, registry=registry
    )
    assert (run.dir / "checkpoints" / "step-00000003.safetensors").exists()


def test_changed_part_versions_warn(tiny_recipe, tmp_path, run_cli):
    import json

    run = api.train(str(tiny_recipe), ["train.steps=2"], runs_dir=tmp_path / "runs", quiet=True)
    parts = json.loads((run.dir / "parts.json").read_text())
    parts["generator"]["version"] = "0.0.0-old"
    (run.dir / "parts.json").write_text(json.dumps(parts))
    with pytest.warns(
        UserWarning, match=r"\[generator\] 'dcgan' was made with dalle-kit 0.0.0-old, now provided by dalle-kit"
    ):
        draw_grid(run.dir, ["a red circle"], n=1, out=tmp_path / "x.png")


def test_config_default_of_the_wrong_type_is_a_problem_at_registration():
    """`lr: float = "2e-4"` would reach every recipe that leaves lr out; the registry refuses the part instead."""
    import types

    import attrs
    import torch

    import dalle_kit

    class Sloppy(gan.Loss):
        name = "sloppy"

        @attrs.frozen
        class Config:
            margin: float = dalle_kit.param("1.0", "a string where a float is declared")
            mode: str = dalle_kit.param("hinge", "fine")

        def discriminator_loss(self, real, fake):
            return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()

        def generator_loss(self, fake):
            return -fake.mean()

    module = types.ModuleType("sloppy_plugin")
    module.register_losses = dalle_kit.hookimpl(lambda register: register(Sloppy))
    registry = Registry.discover(select="", extra=[("sloppy", module)])
    assert "sloppy" not in registry.parts["loss"]
    (problem,) = [p for p in registry.problems if p.plugin.name == "sloppy"]
    assert "loss 'sloppy': Config default margin = '1.0' is not a float" in problem.line()
    assert "make the default match the annotation" in problem.fix
    # every built-in part's defaults fit their annotations
    assert Registry.discover(select="").problems == []


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["plugins", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    """The CLI's help and version answer at once: torch (about 3 s and 650 MB to import) is not loaded for them."""
    code = (
        "import sys\nfrom dalle_kit.cli import main\ncode = main(%r)\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'torchvision', 'torch_fidelity') if m in sys.modules)\n"
        "assert code == 0 and not heavy, (code, heavy)\n"
    ) % (args,)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_lazy_public_api_resolves_every_name():
    import dalle_kit

    for name in dalle_kit.__all__:
        assert getattr(dalle_kit, name) is not None, name
    assert "TextEncoder" in dir(dalle_kit) and "Generator" not in dir(dalle_kit)  # the GAN kinds live in their family
    with pytest.raises(AttributeError):
        dalle_kit.NotAThing  # noqa: B018
