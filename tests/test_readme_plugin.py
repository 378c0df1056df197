"""The plugin printed in the README works as printed: it registers, conforms and trains in a recipe."""

from __future__ import annotations

import re
import types
from pathlib import Path

from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_plugin() -> types.ModuleType:
    block = re.search(r"## A plugin\n+```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md has no '## A plugin' python block"
    module = types.ModuleType("my_plugin")
    exec(compile(block.group(1), "README.md (A plugin)", "exec"), module.__dict__)
    return module


def test_readme_plugin_registers_and_conforms():
    registry = Registry.discover(select="", extra=[("my_plugin", readme_plugin())])
    assert registry.problems == []
    cls = registry.parts["generator"]["mlp"].cls
    check_part(cls)
