"""The core does not know its tools: no module of `dalle_kit` outside `dalle_kit/tools/` imports from there, at
module level, inside a function or under TYPE_CHECKING. The tools may import the core; the CLI reaches their
commands through the ``dalle_kit.commands`` entry points, loaded only when a command needs them."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest

import dalle_kit.cli
import dalle_kit.hints

CORE = Path(dalle_kit.cli.__file__).resolve().parent
#: The tools' commands by entry-point name: top-level commands, and "GROUP.NAME" for a command of a core group.
TOOLS = ("report", "compare", "bench", "eval", "sample", "new-plugin", "plugins", "recipe.list", "recipe.show")


def tool_imports(source: str) -> list[str]:
    """Where `source` (a module directly inside `dalle_kit/`) reaches `dalle_kit.tools`: 'line N: what'."""

    def is_tools(module: str) -> bool:
        return module == "tools" or module.startswith("tools.")

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.startswith("dalle_kit."):  # from dalle_kit.tools(.x) import y
                hit = is_tools(module.removeprefix("dalle_kit."))
            elif (node.level, module) in ((0, "dalle_kit"), (1, "")):  # from . import tools
                hit = any(is_tools(alias.name) for alias in node.names)
            else:  # from .tools(.x) import y
                hit = node.level == 1 and is_tools(module)
            if hit:
                found.append(f"line {node.lineno}: from {'.' * node.level}{module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("dalle_kit.") and is_tools(a.name.removeprefix("dalle_kit."))
            ]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.import_module("dalle_kit.tools.x") or ("..tools", package): an import all the same
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            target = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(target, str):
                if is_tools(target.removeprefix("dalle_kit.").lstrip(".")):
                    found.append(f"line {node.lineno}: {name}({target!r})")
    return found


def test_the_check_sees_every_way_to_import_a_tool():
    source = """\
from dalle_kit.tools.report import write_report
from .tools import bench
from . import hints, tools
import dalle_kit.tools.testing
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from .tools.compare import Entry
def f():
    from dalle_kit import tools
    import importlib
    importlib.import_module("dalle_kit.tools.scaffold")
"""
    assert tool_imports(source) == [
        "line 1: from dalle_kit.tools.report import ...",
        "line 2: from .tools import ...",
        "line 3: from . import ...",
        "line 4: import dalle_kit.tools.testing",
        "line 7: from .tools.compare import ...",
        "line 9: from dalle_kit import ...",
        "line 11: import_module('dalle_kit.tools.scaffold')",
    ]
    harmless = """\
from . import hints, toolsmith
from .errors import UserError
from dalle_kit.files import atomic_write_text
import dalle_kit
from .. import tools
"""
    assert tool_imports(harmless) == []  # the last one lies above dalle_kit: not the tools package


def test_no_core_module_imports_a_tool():
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) > 20 and (CORE / "tools" / "report.py").is_file()
    problems = {path.name: bad for path in modules if (bad := tool_imports(path.read_text()))}
    assert problems == {}, problems


def test_the_tool_commands_are_entry_points_of_this_distribution():
    found = metadata.distribution("dalle-kit").entry_points.select(group=dalle_kit.cli.COMMANDS_GROUP)
    assert sorted(ep.name for ep in found) == sorted(TOOLS)
    for ep in found:
        assert ep.module.startswith("dalle_kit.tools.")
        command = ep.load()
        assert isinstance(command, click.Command) and command.name == ep.name.rpartition(".")[2]


def test_help_lists_the_tools_and_a_core_command_does_not_load_them(capsys):
    probe = (
        "import sys; from dalle_kit.cli import main; code = main(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m.startswith('dalle_kit.tools')), file=sys.stderr); sys.exit(code)"
    )
    for core in (["run", "--help"], ["recipe", "check", "--help"]):
        done = subprocess.run([sys.executable, "-c", probe, *core], capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr.strip() == "[]", (core, done.stderr)
    done = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    top = {name for name in TOOLS if "." not in name}
    assert listed == top | {"run", "sample", "eval", "recipe"}, listed
    assert "dalle_kit.tools.commands" in done.stderr
    done = subprocess.run([sys.executable, "-c", probe, "recipe", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"check", "list", "show"}, listed  # the core's check beside the tools' list and show


def test_a_tool_command_in_a_core_group_runs_as_its_own(run_cli):
    code, out, err = run_cli("recipe", "list")
    what = {line.split()[0]: line.split()[1:3] for line in out.splitlines()}
    assert code == 0 and what["shapes"][0] == "gan" and what["shapes-diffusion"][0] == "diffusion", (out, err)
    assert what["lucic-mnist"] == ["bench", "grid"] and what["lucic-mnist-base"][0] == "gan", out  # grid vs its base
    assert "dalle-kit run default, a bench grid with " in err and err.rstrip().endswith("dalle-kit bench bench-shapes")
    code, out, err = run_cli("recipe", "show", "shapes", "--set", "train.steps=7")
    assert code == 0 and "steps = 7" in out, err
    code, out, err = run_cli("recipe", "nosuch")
    assert code == 2 and err.count("\n") == 1 and "No such command 'nosuch'" in err, err


@pytest.mark.parametrize("group", [(), ("recipe",), ("plugins",)])
def test_a_bare_group_shows_its_help_not_one_flattened_line(run_cli, group):
    code, out, err = run_cli(*group)
    assert code in (0, 2) and (out + err).startswith(f"Usage: dalle-kit {' '.join(group)}".rstrip()), (out, err)
    assert "\nCommands:\n" in out + err and "dalle-kit: error" not in out + err, (out, err)  # click < 8.2: stdout and 0


def stale(monkeypatch, declared: tuple[str, ...]) -> None:
    """Package metadata that declares only the tool commands `declared` (an install older than this checkout)."""
    eps = metadata.EntryPoints(
        metadata.EntryPoint(name, f"dalle_kit.tools.commands:{name}", dalle_kit.cli.COMMANDS_GROUP) for name in declared
    )

    class Stale:
        entry_points = eps

    monkeypatch.setattr(metadata, "distribution", lambda name: Stale())
    monkeypatch.setattr(dalle_kit.cli, "_tool_commands", None)
    for group in (dalle_kit.cli.cli, dalle_kit.cli.recipe):  # commands loaded by earlier tests forgotten
        core = {name: c for name, c in group.commands.items() if c.callback.__module__.startswith("dalle_kit.cli")}
        monkeypatch.setattr(group, "commands", core)


def test_metadata_without_the_tool_commands_says_how_to_reinstall(monkeypatch, capsys):
    stale(monkeypatch, ())  # an editable install made before the tools had entry points
    assert dalle_kit.cli.main(["report", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no command 'report'" in err and "reinstall it: " in err
    assert " install -e " in err or "--force-reinstall" in err


def test_metadata_older_than_the_checkout_says_how_to_reinstall(monkeypatch, capsys):
    """An editable install whose metadata predates a tool command that the checkout's pyproject.toml declares (the
    listing commands moved into the tools): the command says to reinstall, a typo stays click's usage error."""
    if dalle_kit.hints.source_checkout() is None:
        pytest.skip("dalle-kit is not installed in editable mode from a checkout")
    stale(monkeypatch, ("report", "compare", "bench", "new-plugin"))
    for argv, shown in ((["plugins", "list"], "plugins"), (["recipe", "list"], "recipe list")):
        assert dalle_kit.cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"no command '{shown}'" in err and "reinstall it: " in err, err
        assert " install -e " in err
    assert dalle_kit.cli.main(["recipe", "check", "--help"]) == 0  # the core's own commands do not need them
    capsys.readouterr()
    assert dalle_kit.cli.main(["plugin", "list"]) == 2
    assert "No such command 'plugin'" in capsys.readouterr().err


def core_imports(path: Path, core: set[str]) -> set[str]:
    """The core modules `path` imports anywhere in its source (module level, functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found.update([module.split(".")[0]] if module else [a.name for a in node.names])
            elif node.level == 0 and module.startswith("dalle_kit."):
                found.add(module.split(".")[1])
            elif node.level == 0 and module == "dalle_kit":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dalle_kit."))
    return (found & core) - {path.stem}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a circle (Tarjan's components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_check_sees_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_has_no_import_circle():
    """Contracts at the bottom (parts, scores, hookspecs), then registry and recipe, the run's services, the trainer,
    the CLI on top: no module imports one that imports it back, not even for type checking."""
    modules = {p.stem: p for p in CORE.glob("*.py") if p.stem != "__init__"}
    graph = {name: core_imports(path, set(modules)) for name, path in modules.items()}
    assert import_cycles(graph) == []
