"""Built-in training plugin `midrun-eval`: the recipe's ``[eval] metrics`` every ``[eval] every`` steps while
training (the last step's evaluation is the run's final one, made after training). The step's checkpoint is
written first, so metrics that read saved weights (d-roc-auc) see this step's; drawing and the metrics leave
the training's random draws as they were, so a run evaluated mid-way ends with the same weights."""

from __future__ import annotations

import dalle_kit
from dalle_kit import evaluate_run


@dalle_kit.hookimpl(trylast=True)
def train_step_saved(trainer, step: int) -> None:
    if not trainer.draws_images or not trainer.evaluate_due(step):
        return
    trainer.checkpoint()
    with trainer.drawing() as draw:
        evaluate_run(trainer.run, step=step, draw=draw)
