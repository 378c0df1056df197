"""Built-in training plugin `sample-grids`: the recipe's ``[sample]`` prompts drawn into
``samples/step-<n>.png`` every ``[sample] every`` steps and at the last step, for every pipeline that draws
images (with the average when EMA is on, and fixed noise so that grids of one run compare step to step)."""

from __future__ import annotations

import torch

import dalle_kit
from dalle_kit import stream_seed
from dalle_kit.tools.sample import save_grid


def grid_due(trainer, step: int) -> bool:
    """Whether this plugin draws ``samples/step-<step>.png`` at `step`."""
    every = trainer.run.recipe.sample.every
    return trainer.draws_images and bool((every and step % every == 0) or step == trainer.config.steps)


@dalle_kit.hookimpl(tryfirst=True)  # grids before a mid-run evaluation (cheap first)
def train_step_saved(trainer, step: int) -> None:
    if not grid_due(trainer, step):
        return
    run = trainer.run
    prompts, n = run.recipe.sample.all_prompts(), run.recipe.sample.per_prompt
    with trainer.drawing() as draw:  # the same noise at every step: grids of one run compare step to step
        images = draw(
            [p for p in prompts for _ in range(n)],
            torch.Generator().manual_seed(stream_seed(run.recipe.seed, "samples")),
        )
    save_grid(images, prompts, run.files.sample_path(step), title=f"{run.recipe.name}  step {step}")
