"""The built-in plugins use the core only through its public API, as a third-party plugin must: names of
`dalle_kit.__all__` and the helper modules of `dalle_kit.PUBLIC_MODULES`. A built-in that imports a private core
module (`dalle_kit.run`, `dalle_kit.schema`, ...) fails here; make the name public (and document it) instead."""

from __future__ import annotations

import ast
from pathlib import Path

import dalle_kit

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def is_public(module: str) -> bool:
    """Whether `module` (a dotted path below `dalle_kit`, e.g. "files" or "tools.testing") is, or lies inside, a
    public module."""
    return any(module == m or module.startswith(f"{m}.") for m in dalle_kit.PUBLIC_MODULES)


def private_imports(source: str) -> list[str]:
    """The imports in `source` that reach past the public API: 'line N: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "dalle_kit":
                continue
            below = ".".join(parts[1:])
            if not below:  # from dalle_kit import NAME: a public name or a public module
                bad = [a.name for a in node.names if a.name not in dalle_kit.__all__ and not is_public(a.name)]
                found += [f"line {node.lineno}: from dalle_kit import {name}" for name in bad]
            elif not is_public(below):  # from dalle_kit.tools import testing: the module named is public
                bad = [a.name for a in node.names if not is_public(f"{below}.{a.name}")]
                found += [f"line {node.lineno}: from {node.module} import {name}" for name in bad]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "dalle_kit" and len(parts) > 1 and not is_public(".".join(parts[1:])):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return found


def test_the_check_sees_a_private_import():
    source = (
        "from dalle_kit.run import Run\nimport dalle_kit.schema\nfrom dalle_kit import param, structure\n"
        "from dalle_kit.tools import bench, testing\nimport dalle_kit.tools.compare\nfrom dalle_kit import tools\n"
    )
    assert private_imports(source) == [
        "line 1: from dalle_kit.run import Run",
        "line 2: import dalle_kit.schema",
        "line 3: from dalle_kit import structure",
        "line 4: from dalle_kit.tools import bench",
        "line 5: import dalle_kit.tools.compare",
        "line 6: from dalle_kit import tools",
    ]
    public = (
        "import dalle_kit\nfrom dalle_kit import MetricResult\nfrom dalle_kit.files import x\n"
        "from dalle_kit.tools.testing import check_part\nfrom dalle_kit.tools import report\n"
        "import dalle_kit.tools.testing\n"
    )
    assert private_imports(public) == []


def test_builtin_plugins_import_only_the_public_api():
    problems = {
        str(path.relative_to(PLUGINS)): bad
        for path in sorted(PLUGINS.rglob("*.py"))
        if (bad := private_imports(path.read_text()))
    }
    assert problems == {}, problems


def test_every_public_name_resolves():
    for name in dalle_kit.__all__:
        assert getattr(dalle_kit, name) is not None, name
    for module in dalle_kit.PUBLIC_MODULES:
        __import__(f"dalle_kit.{module}")
