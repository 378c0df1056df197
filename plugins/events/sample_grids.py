"""Built-in training plugin `sample-grids`: the recipe's ``[sample]`` prompts drawn into
``samples/step-<n>.png`` every ``[sample] every`` steps and at the last step, for every pipeline that draws
images (with the average when EMA is on, and fixed noise so that grids of one run compare step to step)."""

from __future__ import annotations

import dalle_kit


def grid_due(trainer, step: int) -> bool:
    """Whether this plugin draws ``samples/step-<step>.png`` at `step`."""
    every = trainer.run.recipe.sample.every
    return trainer.draws_images and bool((every and step % every == 0) or step == trainer.config.steps)


@dalle_kit.hookimpl(tryfirst=True)  # grids before a mid-run evaluation (cheap first)
def train_step_saved(trainer, step: int) -> None:
    if not grid_due(trainer, step):
        return
    with trainer.drawing() as draw:
        trainer.run.sample_grid(step, draw)
