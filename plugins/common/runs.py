"""Naming an earlier run in a pipeline's ``[train]`` table (a codec, a CLIP): the run-name prefix fixed to the run
directory it means now, and a missing run answered with the command that trains it."""

from __future__ import annotations

from pathlib import Path

import attrs

import dalle_kit
from dalle_kit import hints


def pin_runs(config, recipes: dict[str, str]):
    """`config` with each ``key`` of `recipes` (key -> the shipped recipe that trains such a run) that is set replaced
    by the run directory it resolves to now. A missing run named like its recipe (``runs/shapes-dvae``) is a
    `dalle_kit.UserError` that prints the command training it."""
    fixed = {}
    for key, recipe in recipes.items():
        value = getattr(config, key)
        if not value:
            continue
        try:
            fixed[key] = str(dalle_kit.resolve_run_dir(value, what=f"[train] {key}").resolve())
        except dalle_kit.UserError:
            where = Path(value)
            if where.name != recipe or (where / "recipe.toml").exists():
                raise
            runs = "" if str(where.parent) == "runs" else f" --runs-dir {hints.quote(str(where.parent))}"
            raise dalle_kit.UserError(
                f"[train] {key} '{value}': no finished {recipe} run in {where.parent}/; train it first with "
                f"`{hints.dalle_kit(f'run {recipe}{runs}')}`, or set {key} to a run directory"
            ) from None
    return attrs.evolve(config, **fixed)
