"""The listing commands answer from the registry index without importing a plugin or torch, say the same as a
full discovery, and discover again when anything the registry is built from changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Runs the CLI in a fresh interpreter and says on stderr whether torch was imported.
PROBE = (
    "import sys; from dalle_kit.cli import main; code = main(sys.argv[1:]); "
    "print('torch imported:', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)"
)


def cli(*args: str, cache: Path, site: Path | None = None) -> tuple[str, bool]:
    env = {k: v for k, v in os.environ.items() if k != "DALLE_KIT_PLUGINS"}
    env["DALLE_KIT_CACHE"] = str(cache)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, "torch imported: True" in done.stderr


@pytest.mark.parametrize("args", [("plugins", "list"), ("plugins", "show", "dcgan"), ("recipe", "list")])
def test_listing_commands_answer_without_torch_and_say_the_same(args, tmp_path):
    first, imported = cli(*args, cache=tmp_path)
    assert imported  # no index yet: the plugins were discovered
    again, imported = cli(*args, cache=tmp_path)
    assert not imported and again == first
    assert (tmp_path / "registry-index.json").is_file()


def test_help_and_version_do_not_import_torch(tmp_path):
    out, imported = cli("--help", cache=tmp_path)
    assert "recipe" in out and not imported
    out, imported = cli("--version", cache=tmp_path)
    assert "dalle-kit, version" in out and not imported


def test_the_index_follows_what_is_installed(tmp_path, plugin_site):
    builtins, _ = cli("plugins", "list", cache=tmp_path)
    assert "  mlp " not in builtins
    with_site, imported = cli("plugins", "list", cache=tmp_path, site=plugin_site)  # a new folder on the path
    assert imported and "  mlp " in with_site and "problems:" in with_site  # dalle-kit-example's part, the broken ones
    assert cli("plugins", "list", cache=tmp_path, site=plugin_site) == (with_site, False)
    module = plugin_site / "dalle_kit_example.py"  # an edited plugin: same version, new file times
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
    assert cli("plugins", "list", cache=tmp_path, site=plugin_site) == (with_site, True)


def test_a_damaged_index_is_rebuilt(tmp_path):
    first, _ = cli("plugins", "list", cache=tmp_path)
    (tmp_path / "registry-index.json").write_text('{"format": 1, "fingerprint": "x", "regis')
    assert cli("plugins", "list", cache=tmp_path) == (first, True)
    assert cli("plugins", "list", cache=tmp_path) == (first, False)


def test_the_download_hint_runs_as_printed(tmp_path):
    """The Inception-weights fix is a command: this environment's Python fetching the URL into the file."""
    import subprocess

    from dalle_kit import hints

    source = tmp_path / "weights.pth"
    source.write_bytes(b"\x00" * 1000)
    target = tmp_path / "hub" / "weights.pth"
    target.parent.mkdir()
    command = hints.download(source.as_uri(), target)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "args",
    [
        ("eval", "RUN", "--seed", "-1"),
        ("sample", "RUN", "a", "--seed", str(2**64)),
        ("compare", "A", "B", "--seed", "-3"),
    ],
)
def test_a_seed_out_of_range_is_one_line(args, run_cli):
    """Seeds are 0 .. 2**63 - 1, as in a recipe: --seed -1 went on to a numpy traceback in eval, 2**64 to an overflow
    in sample; click refuses them before anything is loaded."""
    code, _, err = run_cli(*args)
    assert code == 2 and "--seed" in err and "0<=x<=9223372036854775807" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
