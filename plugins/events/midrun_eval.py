"""Built-in plugin `midrun-eval`: evaluates a run with the recipe's ``[eval] metrics`` (`dalle_kit.tools.evaluate`).

- before a new run's directory is made, checks that every metric can run here (weights present...);
- while training, every ``[eval] every`` steps: the step's checkpoint is written first, so metrics that read saved
  weights (d-roc-auc) see this step's; drawing and the metrics leave the training's random draws as they were, so a
  run evaluated mid-way ends with the same weights;
- once the run has trained all its steps: the final evaluation, from the last checkpoint, kept in ``run.results``.
"""

from __future__ import annotations

import dalle_kit
from dalle_kit.tools.evaluate import check_metrics, evaluate_configured, evaluate_run


@dalle_kit.hookimpl
def check_run(run) -> None:
    check_metrics(run)


@dalle_kit.hookimpl(trylast=True)
def train_step_saved(trainer, step: int) -> None:
    if not trainer.draws_images or not trainer.evaluate_due(step):
        return
    trainer.checkpoint()
    with trainer.drawing() as draw:
        evaluate_run(trainer.run, step=step, draw=draw)


@dalle_kit.hookimpl
def run_trained(run) -> None:
    run.results = evaluate_configured(run)
