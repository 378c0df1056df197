"""Built-in training plugin `ema`: an exponential moving average of one network, for any pipeline.

A pipeline opts in by naming the module (``ema_module = "generator"``) and declaring ``ema`` (the decay,
0: off) and ``ema_start`` (the step from which the average moves; it copies the network until then) in
its ``[train]`` Config. The average is a `torch.optim.swa_utils.AveragedModel` saved with every checkpoint
as ``<module>_ema`` (buffers averaged too); sample grids, mid-run and final metrics and ``dalle-kit sample``
draw with it (`Trainer.restore` builds it through the same event when a run is loaded).
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import dalle_kit


def average_of(module: nn.Module, decay: float) -> AveragedModel:
    """The EMA wrapper of `module` (a copy whose weights move by ``decay`` towards the module's each update)."""
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _target(trainer) -> str | None:
    name = getattr(trainer.pipeline, "ema_module", None)
    return name if name and getattr(trainer.config, "ema", 0.0) else None


@dalle_kit.hookimpl
def modules_built(trainer) -> None:
    name = _target(trainer)
    if name is None:
        return
    modules = trainer.training.modules
    average = average_of(modules[name], trainer.config.ema)
    modules[f"{name}_ema"] = average  # before the checkpoint is restored: resumed with the rest
    trainer.sampling_modules[name] = average.module


@dalle_kit.hookimpl(tryfirst=True)  # before any other plugin looks at the step's weights
def train_step_end(trainer, step: int, values) -> None:
    name = _target(trainer)
    if name is None:
        return
    module, average = trainer.training.modules[name], trainer.training.modules[f"{name}_ema"]
    if step <= getattr(trainer.config, "ema_start", 0):
        average.module.load_state_dict(module.state_dict())
    else:
        average.update_parameters(module)
