"""Naming an earlier run in a pipeline's ``[train]`` table (a codec, a CLIP): the run-name prefix fixed to the run
directory it means now, and a missing run answered with the command that trains it."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import attrs

import dalle_kit
from dalle_kit import hints


def shipped(recipe: str) -> bool:
    """Whether dalle-kit ships a recipe of this name (`dalle-kit run NAME` works)."""
    return resources.files("dalle_kit_plugins.recipes").joinpath(f"{recipe}.toml").is_file()


def pin_runs(config, keys: Sequence[str]):
    """`config` with each of its `keys` that is set replaced by the run directory it resolves to now. A missing run
    named like a shipped recipe (``runs/shapes-dvae``) is a `dalle_kit.UserError` that prints the command training
    it."""
    fixed = {}
    for key in keys:
        value = getattr(config, key)
        if not value:
            continue
        try:
            fixed[key] = str(dalle_kit.resolve_run_dir(value, what=f"[train] {key}").resolve())
        except dalle_kit.UserError:
            where = Path(value)
            recipe = where.name
            if not shipped(recipe) or (where / "recipe.toml").exists():
                raise
            runs = "" if str(where.parent) == "runs" else f" --runs-dir {hints.quote(str(where.parent))}"
            raise dalle_kit.UserError(
                f"[train] {key} '{value}': no finished {recipe} run in {where.parent}/; train it first with "
                f"`{hints.dalle_kit(f'run {recipe}{runs}')}`, or set {key} to a run directory"
            ) from None
    return attrs.evolve(config, **fixed)
