"""The training loop every pipeline shares (mimicry's Trainer: one loop, each model owns its step).

A pipeline's `setup` builds its networks, optimizers and random generators and returns a `Training`;
the `Trainer` owns everything around the step: resuming (weights, optimizers, the global and the
loop's own RNG states), the non-finite guard (stop, nothing saved, the last good checkpoint named),
the cadence of logging and checkpoints, ``--stop-at`` and the stop signals, the progress bar, and the
training events (`dalle_kit.hookspecs`): EMA, sample grids and mid-run evaluation are built-in plugins
on those events, and a third-party plugin adds its own (a logger, an early stopper) the same way.

Order within one iteration::

    values = training.train_step(done)      # the pipeline's step; done = steps finished before it
    train_step_end(trainer, step, values)    # EMA update, early stoppers (trainer.request_stop)
    log (every log_every), checkpoint (every checkpoint_every, the last step, or when stopping)
    train_step_saved(trainer, step)          # sample grids, then mid-run evaluation

In several processes (`dalle_kit.distributed`, torchrun) every rank runs this loop on batches of its own; the
ranks agree each step on stopping and on finiteness, average the logged values, and check at each checkpoint that
their weights are identical. Rank 0 alone saves, logs and fires the training events (the plugins on them write
files); the other ranks only train.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import torch

from . import distributed
from .threads import ThreadPolicy
from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Pipeline
    from .run import Run


@attrs.define
class Training:
    """What a pipeline's ``setup(run, state)`` hands the trainer.

    ``modules``, ``optimizers`` and ``rngs`` are saved in every checkpoint under their keys and restored on
    resume (plugins may add modules at ``train_start``, as EMA adds ``<name>_ema``). ``train_step(done)``
    runs one iteration and returns the values to check for finiteness, show and log (floats). ``draw``
    turns the modules to sample with into ``(prompts, rng) -> images in [-1, 1]`` (None: the pipeline
    draws no images). ``extra_state`` returns JSON-able state saved under ``extra`` (a vocabulary);
    ``log_values(step)`` adds costly values on logging steps only (a held-out error); ``before_save(step,
    state)`` runs after the finiteness check and before the checkpoint is written (an export beside it).
    """

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    train_step: Callable[[int], dict[str, float]]
    rngs: dict[str, torch.Generator] = attrs.Factory(dict)
    draw: Callable[[dict[str, torch.nn.Module]], Callable] | None = None
    extra_state: Callable[[], dict[str, Any]] | None = None
    log_values: Callable[[int], dict[str, Any]] | None = None
    before_save: Callable[[int, dict[str, Any]], None] | None = None
    divergence_fix: str = "lower [train] lr"


class Trainer:
    """Runs a pipeline's `Training` to ``[train] steps``: see the module docstring for the order of events."""

    def __init__(self, run: Run, pipeline: Pipeline):
        self.run = run
        self.pipeline = pipeline
        self.config = pipeline.config
        self.hook = run.registry.hook
        self.step = 0
        self.training: Training | None = None
        #: Modules that replace the trained ones when drawing images (EMA puts its average here).
        self.sampling_modules: dict[str, torch.nn.Module] = {}
        self.stop_reason: str | None = None
        self.saved_step: int | None = None
        self._trained: list[str] = []
        self.threads: ThreadPolicy | None = None

    # ------------------------------------------------------------ the loop
    def fit(self) -> None:
        run, cfg = self.run, self.config
        state = run.load_checkpoint()
        self.threads = ThreadPolicy(cfg.threads, (state or {}).get("trainer", {}).get("threads"))
        before = torch.get_num_threads()
        try:
            self._fit(state)
        finally:
            torch.set_num_threads(before)  # evaluation, and a caller's next run, start from the caller's setting

    def _fit(self, state) -> None:
        run, cfg = self.run, self.config
        main = distributed.is_main()
        hook = self.hook if main else None
        assert self.threads is not None  # set by fit()
        self.threads.start()
        self.training = t = self.pipeline.setup(run, state)
        self._trained = list(t.modules)  # the pipeline's own (plugins such as EMA add theirs on rank 0 only)
        if hook:
            hook.train_start(trainer=self)
        self.step = run.resume(state, models=t.modules, optimizers=t.optimizers, rngs=t.rngs)
        distributed.reseed(t.rngs, run.recipe.seed, self.step)
        if distributed.active() and main:  # which stretch of the run how many processes trained, and on what batch
            run.log(
                self.step,
                kind="distributed",
                processes=distributed.world_size(),
                backend=distributed.backend(),
                batch_per_process=cfg.batch_size,
                global_batch=cfg.batch_size * distributed.world_size(),
            )
        self.saved_step = self.step if state is not None else None
        bar = run.progress(cfg.steps, initial=self.step)
        try:
            while self.step < cfg.steps:
                values = t.train_step(self.step)
                self.step = step = self.step + 1
                (diverged,) = distributed.any_true(not all(math.isfinite(v) for v in values.values()))
                if diverged:
                    raise run.diverged(step, values, fix=t.divergence_fix)  # nothing saved: the checkpoints stay good
                log_step = step % cfg.log_every == 0 or step == cfg.steps
                if log_step:
                    values = distributed.mean({**values, **(t.log_values(step) if t.log_values else {})})
                if hook:
                    hook.train_step_end(trainer=self, step=step, values=values)
                if log_step:
                    run.log(step, kind="train", **values)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                bar.update(1)
                if (count := self.threads.adapt()) is not None and main:
                    run.log(step, kind="threads", threads=count, setting=str(cfg.threads))
                (stop,) = distributed.any_true(run.should_stop(step) or self.stop_reason is not None)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop or run.evaluate_due(step, cfg.steps):
                    self._save(collective=True)  # before sample grids and evaluation: an error there loses no training
                if hook:
                    hook.train_step_saved(trainer=self, step=step)
                if stop:
                    why = f" ({self.stop_reason})" if self.stop_reason else ""
                    if main:
                        bar.write(f"stopped at step {step}{why}; continue with: {run.resume_command()}")
                    break
        finally:
            bar.close()
        if hook:
            hook.train_end(trainer=self, step=self.step, finished=self.step >= cfg.steps)

    # ------------------------------------------------------------ services for hooks
    def checkpoint(self) -> None:
        """Save this step's training state (once per step: a second call at the same step does nothing). In several
        processes the hooks run on rank 0 only, so a hook's call saves there without the ranks' agreement check."""
        self._save(collective=False)

    def _save(self, collective: bool) -> None:
        if self.saved_step == self.step:
            return
        t, run = self.training, self.run
        assert t is not None and self.threads is not None  # saving starts after fit() set them and the setup ran
        if collective:
            trained = {key: t.modules[key] for key in self._trained}
            apart = distributed.differing_ranks(trained)
            if apart:
                raise UserError(
                    f"step {self.step}: the weights of rank(s) {apart} differ from rank 0's; pipeline "
                    f"'{self.pipeline.name}' trains a network without run.parallel(...) and cannot train "
                    "in several processes; run it in one"
                )
        if distributed.is_main():
            extra = {"extra": t.extra_state()} if t.extra_state else {}
            state = run.training_state(
                models=t.modules, optimizers=t.optimizers, rngs=t.rngs, trainer={"threads": self.threads.count}, **extra
            )
            run.check_finite(
                self.step, state, fix=t.divergence_fix
            )  # a diverged state reaches neither an export nor a checkpoint
            if t.before_save is not None:
                t.before_save(self.step, state)
            run.save_checkpoint(self.step, state, checked=True)
        self.saved_step = self.step
        if collective:
            distributed.reseed(t.rngs, run.recipe.seed, self.step)  # other ranks: as a run resumed from here would
        if distributed.is_main():
            self.hook.train_checkpoint(trainer=self, step=self.step)

    @property
    def draws_images(self) -> bool:
        return self.training is not None and self.training.draw is not None

    @contextmanager
    def drawing(self) -> Iterator[Callable]:
        """``(prompts, rng) -> images`` from the current weights (EMA's average where kept). Inside, the global RNG
        is forked and afterwards every module is back in the mode it was in, so drawing never changes training."""
        t = self.training
        if t is None or t.draw is None:
            raise RuntimeError(f"pipeline '{self.pipeline.name}' draws no images")
        modes = {key: [m.training for m in module.modules()] for key, module in t.modules.items()}
        try:
            with torch.random.fork_rng(devices=[]):
                yield t.draw({**t.modules, **self.sampling_modules})
        finally:
            for key, module in t.modules.items():
                for m, mode in zip(module.modules(), modes[key]):
                    m.training = mode

    def request_stop(self, reason: str) -> None:
        """Stop after this step with a checkpoint, as Ctrl-C does (an early stopper calls it from ``train_step_end``)."""
        self.stop_reason = reason
