"""The recipes shipped with dalle-kit (the files in recipes/), runnable by name; `default` is shapes.toml.

Benchmark grids (bench-*.toml, lucic-mnist.toml...) are registered by name too: `dalle-kit bench NAME` runs one,
`dalle-kit run NAME` says to, and `dalle-kit recipe list` marks them.
"""

from importlib import resources

import dalle_kit

DEFAULT = "shapes"


@dalle_kit.hookimpl
def register_recipes(register):
    folder = resources.files("dalle_kit_plugins.recipes")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            register(entry.name[: -len(".toml")], str(entry))
            if entry.name == f"{DEFAULT}.toml":
                register("default", str(entry))
