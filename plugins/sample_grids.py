"""Built-in training plugin `sample-grids`: the recipe's ``[sample]`` prompts drawn into
``samples/step-<n>.png`` every ``[sample] every`` steps and at the last step, for every pipeline that draws
images (with the average when EMA is on, and fixed noise so that grids of one run compare step to step)."""

from __future__ import annotations

import dalle_kit


@dalle_kit.hookimpl(tryfirst=True)  # grids before a mid-run evaluation (cheap first)
def train_step_saved(trainer, step: int) -> None:
    every = trainer.run.recipe.sample.every
    if not trainer.draws_images or not ((every and step % every == 0) or step == trainer.config.steps):
        return
    with trainer.drawing() as draw:
        trainer.run.sample_grid(step, draw)
