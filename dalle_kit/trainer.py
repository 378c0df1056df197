"""The training loop every pipeline shares (mimicry's Trainer: one loop, each model owns its step).

A pipeline's `setup` builds its networks, optimizers and random generators and returns a `Training`;
the `Trainer` owns everything around the step: resuming (weights, optimizers, the global and the
loop's own RNG states), the non-finite guard (stop, nothing saved, the last good checkpoint named),
the cadence of logging and checkpoints, ``--stop-at`` and the stop signals, the progress bar, and the
training events (`dalle_kit.hookspecs`): EMA, sample grids and mid-run evaluation are built-in plugins
on those events, and a third-party plugin adds its own (a logger, an early stopper) the same way.

Order of events: ``setup(run, state)``, ``modules_built(trainer)`` (EMA adds its average), ``train_start``, the
checkpoint restored, then in each iteration::

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
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import torch

from . import distributed, hints, progress
from .errors import UserError
from .parts import Pipeline, Training
from .store import load_modules
from .threads import Threads

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

#: Signals that stop training at the end of the current step with a checkpoint (a second one stops at once).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


Draw = Callable[[Sequence[str], torch.Generator], torch.Tensor]


class Trainer:
    """Runs a pipeline's `Training` to ``[train] steps`` (see the module docstring for the order of events), and
    owns the loop's state: the step, the stop request and signals, resuming and saving.

    `restore` builds the same `Training` from a run's newest checkpoint without training: what ``sample``, ``eval``
    and a pipeline's critic draw and judge with."""

    def __init__(self, run: Run, pipeline: Pipeline, *, stop_at: int | None = None):
        self.run = run
        self.pipeline = pipeline
        self.config = pipeline.config
        self.hook = run.registry.hook
        self.stop_at = stop_at
        self.step = 0
        self.training: Training | None = None
        #: Modules that replace the trained ones when drawing images (EMA puts its average here).
        self.sampling_modules: dict[str, torch.nn.Module] = {}
        self.stop_reason: str | None = None
        self.interrupted = False
        self.saved_step: int | None = None
        self._trained: list[str] = []
        self.threads: Threads | None = None

    # ------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train from the run's newest checkpoint (or from scratch) to ``[train] steps``, or until stopped."""
        state = self.run.checkpoints.load()
        self.threads = Threads(self.config.threads, (state or {}).get("trainer", {}).get("threads"))
        before = torch.get_num_threads()
        try:
            with self.catch_interrupt():
                self._fit(state)
        finally:
            torch.set_num_threads(before)  # evaluation, and a caller's next run, start from the caller's setting

    def _build(self, state: dict[str, Any] | None) -> Training:
        self.training = t = self.pipeline.setup(self.run, state)
        self._trained = list(t.modules)  # the pipeline's own (plugins such as EMA add theirs, on rank 0 only)
        if distributed.is_main():
            self.hook.modules_built(trainer=self)
        return t

    def _fit(self, state) -> None:
        run, cfg = self.run, self.config
        main = distributed.is_main()
        hook = self.hook if main else None
        assert self.threads is not None  # set by fit()
        self.threads.start()
        t = self._build(state)
        if hook:
            hook.train_start(trainer=self)
        self.step = self._resume(state)
        distributed.reseed(run.streams, run.recipe.seed, self.step)
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
        bar = progress.bar(cfg.steps, run.recipe.name, "step", initial=self.step, quiet=run.quiet or not main)
        try:
            while self.step < cfg.steps:
                values = t.train_step(self.step)
                self.step = step = self.step + 1
                (diverged,) = distributed.any_true(not all(math.isfinite(v) for v in values.values()))
                if diverged:
                    raise self.diverged(step, values)  # nothing saved: the checkpoints stay good
                log_step = step % cfg.log_every == 0 or step == cfg.steps
                if log_step:
                    values = distributed.mean({**values, **(t.log_values(step) if t.log_values else {})})
                if hook:
                    hook.train_step_end(trainer=self, step=step, values=values)
                if log_step:
                    run.log(step, kind="train", **values)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                bar.update(1)
                (stop,) = distributed.any_true(self.should_stop(step))
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop or self.evaluate_due(step):
                    self._save(collective=True)  # before sample grids and evaluation: an error there loses no training
                if hook:
                    hook.train_step_saved(trainer=self, step=step)
                if stop:
                    why = f" ({self.stop_reason})" if self.stop_reason else ""
                    if main:
                        bar.write(f"stopped at step {step}{why}; continue with: {run.files.resume_command()}")
                    break
        finally:
            bar.close()
        if hook:
            hook.train_end(trainer=self, step=self.step, finished=self.step >= cfg.steps)

    def _resume(self, state: dict[str, Any] | None) -> int:
        """Restore the loop from `state` (the run's newest checkpoint; None: a fresh start): weights, optimizers, the
        global torch RNG and the run's random streams; drop metric rows logged after it. Returns the step."""
        if state is None:
            return 0
        t = self.training
        assert t is not None
        load_modules(t.modules, state, source=str(self.run.dir))
        for key, opt in t.optimizers.items():
            opt.load_state_dict(state["optim"][key])
        torch.set_rng_state(state["rng"]["torch"])
        for name, rng in self.run.streams.items():
            if name in state["rng"]:  # a stream a newer version of the pipeline takes starts fresh
                rng.set_state(state["rng"][name])
        self.run.files.truncate_metrics(state["step"])
        return int(state["step"])

    def state_dict(self) -> dict[str, Any]:
        """What `_resume` reads back: weights, optimizers, RNG states, the thread count and the pipeline's extra."""
        t = self.training
        assert t is not None and self.threads is not None
        return {
            "models": {k: m.state_dict() for k, m in t.modules.items()},
            "optim": {k: o.state_dict() for k, o in t.optimizers.items()},
            "rng": {"torch": torch.get_rng_state(), **{k: r.get_state() for k, r in self.run.streams.items()}},
            "trainer": {"threads": self.threads.count},
            **({"extra": t.extra_state()} if t.extra_state else {}),
        }

    def diverged(self, step: int, losses: dict[str, float]) -> UserError:
        """The error raised when a loss turns non-finite: names the step, the losses and the last good checkpoint."""
        t = self.training
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in losses.items())
        fix = t.divergence_fix if t is not None else "lower [train] lr"
        return UserError(
            f"step {step}: loss is not finite ({shown}); stopped without saving. "
            f"{self.run.checkpoints.last_good_text()}; {self.run.retrain_advice(fix)}"
        )

    # ------------------------------------------------------------ stopping
    def should_stop(self, step: int) -> bool:
        return self.interrupted or self.stop_reason is not None or (self.stop_at is not None and step >= self.stop_at)

    @contextmanager
    def catch_interrupt(self) -> Iterator[None]:
        """Ctrl-C, SIGTERM (kill, a batch scheduler) and SIGHUP (a closed terminal) ask the loop to stop at the end
        of the current step; it then saves a checkpoint. A second signal stops at once."""

        def handler(signum, frame):
            # A second signal stops at once; not under torchrun, which passes on the terminal's Ctrl-C that every
            # worker has already had (its agent kills workers that are not done 30 s later).
            if self.interrupted and not distributed.requested():
                raise KeyboardInterrupt
            self.interrupted = True

        previous = {}
        try:
            for sig in STOP_SIGNALS:
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            for sig, old in previous.items():
                signal.signal(sig, old)
            yield
            return
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def evaluate_due(self, step: int) -> bool:
        """Whether the recipe's [eval] asks for an evaluation at this intermediate step."""
        evaluation = self.run.recipe.eval
        every = evaluation.every
        return bool(evaluation.metrics) and bool(every) and step % every == 0 and step < self.config.steps

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
                    f"'{self.pipeline.name}' trains a network without run.parts.parallel(...) or changes weights "
                    "outside the gradient step on each rank differently, and cannot train in several processes; "
                    "run it in one"
                )
        if distributed.is_main():
            state = self.state_dict()
            advice = run.retrain_advice(t.divergence_fix)
            run.checkpoints.check_finite(self.step, state, advice)  # a diverged state reaches no export either
            if t.before_save is not None:
                t.before_save(self.step, state)
            run.checkpoints.save(self.step, state, advice=advice, checked=True)
        self.saved_step = self.step
        if collective:
            distributed.reseed(run.streams, run.recipe.seed, self.step)  # other ranks: as a run resumed from here
        if distributed.is_main():
            self.hook.train_checkpoint(trainer=self, step=self.step)

    @property
    def draws_images(self) -> bool:
        return self.training is not None and self.training.draw is not None

    @contextmanager
    def drawing(self) -> Iterator[Draw]:
        """``(prompts, rng) -> images`` from the current weights (EMA's average where kept). Inside, the global RNG
        is forked and afterwards every module is back in the mode it was in, so drawing never changes training."""
        t = self.training
        if t is None or t.draw is None:
            raise RuntimeError(f"pipeline '{self.pipeline.name}' draws no images")
        modes = {key: [m.training for m in module.modules()] for key, module in t.modules.items()}
        try:
            with torch.random.fork_rng(devices=[]):
                yield t.draw(self.drawing_modules)
        finally:
            for key, module in t.modules.items():
                for m, mode in zip(module.modules(), modes[key]):
                    m.training = mode

    @property
    def drawing_modules(self) -> dict[str, torch.nn.Module]:
        """The modules images are drawn with: the trained ones, with EMA's (or another plugin's) in their place."""
        assert self.training is not None
        return {**self.training.modules, **self.sampling_modules}

    def request_stop(self, reason: str) -> None:
        """Stop after this step with a checkpoint, as Ctrl-C does (an early stopper calls it from ``train_step_end``)."""
        self.stop_reason = reason

    # ------------------------------------------------------------ a trained run
    @classmethod
    def restore(cls, run: Run, pipeline: Pipeline) -> Trainer:
        """The pipeline's `Training` built by its own ``setup`` from the run's newest checkpoint, with the plugins'
        modules (EMA's average) and every weight loaded: what sampling, metrics and critics use. Nothing trains."""
        state = run.checkpoints.load(("models", "extra"))
        if state is None:
            raise UserError(f"{run.dir}: no checkpoint yet; train first with {hints.dalle_kit('run')}")
        trainer = cls(run, pipeline)
        trainer._build(state)
        assert trainer.training is not None
        load_modules(trainer.training.modules, state, source=str(run.dir))
        trainer.step = int(state["step"])
        return trainer

    def sampler(self) -> Draw:
        """``(prompts, rng) -> images in [-1, 1]`` with the drawing modules (after `restore`)."""
        t = self.training
        if t is None or t.draw is None:
            raise UserError(f"pipeline '{self.pipeline.name}' draws no images; its runs cannot be sampled")
        return t.draw(self.drawing_modules)


def sampler(run: Run, pipeline: Pipeline | None = None, **settings: Any) -> Draw:
    """``(prompts, rng) -> images in [-1, 1]`` from the run's newest weights (`Trainer.restore`): `pipeline`, or the
    recipe's with `settings` in place of its ``[train]`` values (a diffusion run's ``sample_steps``). A pipeline that
    draws no images is refused in one line before anything is built."""
    if pipeline is None:
        train = attrs.evolve(run.recipe.train, **settings) if settings else run.recipe.train
        pipeline = run.recipe.pipeline.info.cls(train)
    if not pipeline.draws_images:
        name = run.recipe.pipeline.info.name
        raise UserError(f"{run.dir}: {hints.draws_nothing(name)}")
    return Trainer.restore(run, pipeline).sampler()
