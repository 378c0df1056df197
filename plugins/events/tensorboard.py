"""Built-in training plugin `tensorboard`: a run's losses, learning rates, CPU thread count, metrics (with their protocol as text) and
sample grids as TensorBoard event files in ``<run>/tensorboard``, through torch's ``SummaryWriter``, when the
recipe's ``[log] tensorboard`` is true (the default). ``tensorboard --logdir runs`` shows every run. A resumed run
purges the events after its checkpoint (``purge_step``), as metrics.jsonl drops its rows, so a replayed stretch
is not shown twice.

TensorBoard reads a folder's event files in name order and drops a tag's points past a step it meets again, so the
files must sort in the order they were written. Their names start with the second they were opened and end with a
counter of the process's writers, which sorts as text (``….10`` before ``….9``). So a run that trained all its
steps keeps its writer open for the final evaluation (one file, not two), and a writer opened in a folder holding a
file of this second (or a later one) first waits for the next second.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

import dalle_kit
from dalle_kit_plugins.events.sample_grids import grid_due

FOLDER = "tensorboard"
_writers: dict = {}  # run directory -> the SummaryWriter open while it trains


def _writer(run, purge_step: int | None = None):
    if not run.recipe.log.tensorboard:
        return None
    writer = _writers.get(run.dir)
    if writer is None:
        from torch.utils.tensorboard import SummaryWriter

        _after_newest_file(run.dir / FOLDER)
        writer = _writers[run.dir] = SummaryWriter(log_dir=str(run.dir / FOLDER), purge_step=purge_step)
    return writer


def _after_newest_file(folder: Path) -> None:
    """Wait until the clock is past the second in the newest event file's name in `folder`, when that second is
    this one or the next (a file from further ahead, a clock set wrong, is left as it is)."""
    names = [p.name.split(".") for p in folder.glob("events.out.tfevents.*.*")]
    newest = max((int(name[3]) for name in names if name[3].isdigit()), default=None)
    if newest is not None and 0 < newest + 1 - time.time() <= 2:
        time.sleep(max(0.0, newest + 1 - time.time()))


def _close(run) -> None:
    writer = _writers.pop(run.dir, None)
    if writer is not None:
        writer.close()


@dalle_kit.hookimpl
def train_start(trainer) -> None:
    _close(trainer.run)  # one left open by a training in this process that failed: this one purges from its start


@dalle_kit.hookimpl
def train_step_end(trainer, step: int, values) -> None:
    cfg = trainer.config
    # Opened at the first step this process trains (the checkpoint's + 1): everything logged from there on is replaced.
    writer = _writer(trainer.run, purge_step=step if trainer.run.dir not in _writers else None)
    if step % cfg.log_every and step != cfg.steps:
        return
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", value, step)
        if trainer.threads is not None:  # the CPU threads it trained with (threads = "auto" follows the load)
            writer.add_scalar("train/threads", trainer.threads.count, step)


@dalle_kit.hookimpl(trylast=True)  # after the sample-grids plugin has drawn this step's grid
def train_step_saved(trainer, step: int) -> None:
    if not grid_due(trainer, step):
        return
    writer = _writer(trainer.run)
    if writer is not None:
        with Image.open(trainer.run.files.sample_path(step)) as image:
            writer.add_image("samples", np.asarray(image.convert("RGB")), step, dataformats="HWC")


@dalle_kit.hookimpl
def train_end(trainer, step: int, finished: bool) -> None:
    writer = _writers.get(trainer.run.dir)
    if finished and writer is not None:
        writer.flush()  # the final evaluation follows: `run_trained` closes it (else the next `train_start` or exit)
    else:
        _close(trainer.run)


@dalle_kit.hookimpl(trylast=True)  # after the midrun-eval plugin's final evaluation
def run_trained(run) -> None:
    _close(run)


@dalle_kit.hookimpl
def run_evaluated(run, step: int, results) -> None:
    training = run.dir in _writers  # mid-run: the training's writer; after training or from `dalle-kit eval`: its own
    writer = _writer(run)
    if writer is None:
        return
    for name, result in results.items():
        for key, value in result.values.items():
            writer.add_scalar(f"eval/{name}/{key}", value, step)
        writer.add_text(f"eval/{name}/protocol", result.protocol.line(), step)
    if training:
        writer.flush()
    else:
        _close(run)
