"""What `dalle-kit run` does, as functions: train a recipe, resume or extend a run."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import torch

from . import hints, progress
from .errors import UserError
from .checkpoint import atomic_write_text
from .recipe import RECIPE_FILE, load_recipe, parse_override
from .registry import Registry, get_registry
from . import distributed
from .building import check_parts, pick_device
from .run import Run, resolve_run_dir
from .schema import absolute_paths
from .trainer import Trainer

DEFAULT_RECIPE = "default"


def train(
    target: str | None = None,
    overrides: Sequence[str] = (),
    *,
    resume: str | Path | None = None,
    stop_at: int | None = None,
    runs_dir: str | Path = "runs",
    quiet: bool = False,
    registry: Registry | None = None,
) -> Run:
    """Validate the recipe, make the run directory and train; or continue the run in `resume` (a run directory, or
    a run's name meaning its newest run: `dalle_kit.run.resolve_run_dir`)."""
    registry = registry or get_registry()
    if resume is not None and not Path(resume).exists():  # a run's name: its newest run
        resume = resolve_run_dir(resume, what="--resume")
    if distributed.requested():  # one of several processes (torchrun): rank 0 makes and locks the run directory
        return _train_distributed(
            target, overrides, resume=resume, stop_at=stop_at, runs_dir=runs_dir, quiet=quiet, registry=registry
        )
    if resume is not None:
        if target is not None:
            raise UserError("give either a recipe or --resume RUN_DIR, not both")
        run = open_for_resume(resume, overrides, quiet=quiet, registry=registry, stop_at=stop_at)
    else:
        run = create_checked(target, overrides, runs_dir=runs_dir, quiet=quiet, registry=registry)
        run.files.lock()
    return _train(run, stop_at)


def open_for_resume(resume, overrides, *, quiet, registry, stop_at: int | None = None) -> Run:
    """The run in `resume`, locked, its recipe extended by ``--set train.steps=N``; a `stop_at` it has passed is
    refused."""
    run = Run.open(resume, registry, quiet=quiet)
    check_extension(overrides)
    run.files.lock()  # one trainer per run directory
    try:
        last = run.checkpoints.load(prefixes=())
        if last is None:
            raise UserError(f"{resume}: has no checkpoint to resume from (checkpoints/ is empty)")
        if stop_at is not None and stop_at <= last["step"]:
            raise UserError(
                f"--stop-at {stop_at}: {resume} is at step {last['step']} already; give a later step, or leave "
                f"--stop-at out to train to its end ({run.recipe.train.steps})"
            )
        if overrides:
            extend(run, overrides, last["step"], registry)
        elif last["step"] >= run.recipe.train.steps and not run.files.unscored(run.recipe.eval.metrics, last["step"]):
            raise finished(run, last["step"])
    except BaseException:
        run.files.unlock()
        raise
    return run


def finished(run: Run, step: int) -> UserError:
    """Why `run`, trained all its steps and evaluated, has nothing to resume, and what can be done with it instead
    (resuming one stopped during its final evaluation finishes that evaluation)."""
    pipeline = run.recipe.pipeline.info
    where = hints.quote(str(run.dir))
    if not pipeline.cls(run.recipe.train).schedule_depends_on_steps():
        todo = [f"to train it for longer: {hints.dalle_kit(f'run --resume {where} --set train.steps={2 * step}')}"]
    elif getattr(pipeline.cls, "finetunes", False):  # `extend` would refuse: a new run from its weights
        again = f"run {hints.quote(str(run.dir / RECIPE_FILE))} --set init_from={where}"
        todo = [f"to train it on from its weights, in a new run: {hints.dalle_kit(again)}"]
    else:
        todo = []
    if pipeline.cls.draws_images:
        dataset = run.recipe.parts["data"].info.name if "data" in run.recipe.parts else ""
        metrics = [] if run.recipe.eval.metrics else run.registry.suggested_metrics(dataset)
        todo.append(f"to score it again: {hints.eval_command(run.dir, metrics)}")
    done = " and evaluated" if run.recipe.eval.metrics else ""
    return UserError(
        f"{run.dir}: has trained all its {step} steps{done}, so there is nothing to resume"
        + "".join(f"; {line}" for line in todo)
    )


def create_checked(target, overrides, *, runs_dir, quiet, registry) -> Run:
    """A new run directory for the recipe, made only after the recipe, its data, parts and metrics check out."""
    recipe = load_recipe(target or DEFAULT_RECIPE, registry, overrides)
    recipe = pin(recipe, registry)
    # Data or a metric that cannot be had here (missing files, weights) stops now, before a run directory.
    probe = Run(Path(runs_dir), recipe, registry, quiet=quiet)  # quiet: no progress of a metric's check
    if "data" in recipe.parts:
        probe.parts.dataset().check()
    check_parts(recipe)  # a part whose constructor fails (a size it does not support) stops here too
    registry.hook.check_run(run=probe)  # a metric whose weights are missing, ...
    if recipe.train.sync_batchnorm and probe.device.type != "cuda":
        raise UserError("[train] sync_batchnorm = true needs CUDA (torch's SyncBatchNorm); set it false on the CPU")
    return Run.create(recipe, registry, runs_dir, quiet=quiet)


def _train_distributed(target, overrides, *, resume, stop_at, runs_dir, quiet, registry) -> Run:
    """Rank 0 checks the recipe and makes (or opens and locks) the run directory; every rank then opens it and
    trains its share (`dalle_kit.distributed`). Rank 0 alone evaluates at the end."""
    if resume is not None and target is not None:
        raise UserError("give either a recipe or --resume RUN_DIR, not both")
    source = Path(resume) / RECIPE_FILE if resume is not None else target or DEFAULT_RECIPE
    recipe = load_recipe(source, registry, () if resume is not None else overrides, check_name=resume is None)
    distributed.init(pick_device(recipe.device))  # gloo on the CPU, nccl on CUDA
    clean = False
    try:
        path, error = None, None
        if distributed.is_main():
            try:
                if resume is not None:
                    run = open_for_resume(resume, overrides, quiet=quiet, registry=registry, stop_at=stop_at)
                else:
                    run = create_checked(target, overrides, runs_dir=runs_dir, quiet=quiet, registry=registry)
                    run.files.lock()
                path = str(run.dir)
            except UserError as exc:
                error = str(exc)
        path, error = distributed.broadcast((path, error))
        if error is not None:
            raise UserError(error)
        if not distributed.is_main():
            run = Run.open(path, registry, quiet=True)
        run = _train(run, stop_at)
        clean = True
        return run
    finally:
        distributed.shutdown(clean=clean)


def _train(run: Run, stop_at: int | None = None) -> Run:
    try:
        if run.files.writes:
            progress.done()
            run.say(f"run directory: {run.dir}")  # first, so the grids can be watched while it trains
            progress.phase("preparing: data, text encoder, networks", quiet=run.quiet)  # the training bar ends it
        torch.manual_seed(run.recipe.seed)
        trainer = Trainer(run, run.recipe.pipeline.info.cls(run.recipe.train), stop_at=stop_at)
        with flush_denormals():
            trainer.fit()
        run.interrupted = trainer.interrupted
        final = run.checkpoints.load(prefixes=()) if run.files.writes else None
        if not run.interrupted and final is not None and final["step"] >= run.recipe.train.steps:
            try:
                with flush_denormals():
                    run.registry.hook.run_trained(run=run)  # the final evaluation (built-in plugin midrun-eval)
            except KeyboardInterrupt:
                run.say(f"final evaluation stopped; finish it with: {run.files.resume_command()}")
                raise
    finally:
        run.files.unlock()  # held while this process trains and evaluates the run (a crash or kill releases it too)
    return run


@contextmanager
def flush_denormals():
    """Flush denormal floats to zero inside (they slow CPU training down several times over:
    benchmarks/results/train-throughput.md), torch's default outside. numpy's float limits are read first: in
    flush-to-zero mode numpy finds the smallest subnormal to be zero and warns about it on every new ``np.finfo``,
    which the cached ones avoid."""
    import numpy as np

    global _flushing
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype)
    torch.set_flush_denormal(True)
    _flushing += 1
    try:
        yield
    finally:
        _flushing -= 1
        if not _flushing:  # the outermost one (a bench cell's run inside the bench) restores the default
            torch.set_flush_denormal(False)


_flushing = 0


#: What ``--set`` may change in a run being resumed: how long it trains. Any other change would make the
#: saved state mean something it was not trained for; that is a new run (``init_from`` to start from it).
EXTENDABLE = (["train", "steps"],)


def check_extension(overrides: Sequence[str]) -> None:
    for text in overrides:
        if parse_override(text)[0] not in EXTENDABLE:
            raise UserError(
                f"--set {text!r}: a run being resumed can only be trained for longer (--set train.steps=N); "
                "start a new run with the changed recipe instead"
            )


def extend(run: Run, overrides: Sequence[str], done: int, registry: Registry) -> None:
    """Train the resumed `run` for longer: check the new ``[train] steps`` and rewrite its recipe.toml.
    Training 5000 steps and extending to 15000 gives the same weights as a run made with 15000 (the
    checkpoint holds every optimiser and random state), unless the schedule is a function of the steps."""
    recipe = load_recipe(run.dir / RECIPE_FILE, registry, list(overrides), check_name=False)
    steps = recipe.train.steps
    if steps <= done:
        raise UserError(
            f"--set train.steps={steps}: {run.dir} already has a checkpoint at step {done}; give more steps than {done}"
        )
    if recipe.pipeline.info.cls(recipe.train).schedule_depends_on_steps():
        raise UserError(
            f"--set train.steps={steps}: {run.dir / RECIPE_FILE} has a learning-rate schedule that "
            "ends at [train] steps, so a longer run would not match one made with that many steps; "
            "start a new run (init_from = this run) instead"
        )
    atomic_write_text(run.dir / RECIPE_FILE, recipe.dumps())
    run.recipe = recipe


def pin(recipe, registry: Registry):
    """The recipe with every reference to another run fixed to the run directory it means now (see `Part.pin`),
    so the new run records which runs it built on, not names that a later run would change, and every path setting
    made absolute, so its recipe means the same files from any folder. Settings of metrics the run does not score
    (``[eval.<metric>]`` tables not in ``[eval] metrics``) stay as written: they are resolved when `dalle-kit eval`
    scores them, and a run they name need not exist yet."""
    if recipe.init_from:
        recipe = attrs.evolve(recipe, init_from=str(resolve_run_dir(recipe.init_from, what="init_from")))
    parts = {
        section: attrs.evolve(spec, config=spec.info.cls.pin(absolute_paths(spec.config)))
        for section, spec in recipe.parts.items()
    }
    settings = {
        name: registry.get("metric", name).cls.pin(absolute_paths(config)) if name in recipe.eval.metrics else config
        for name, config in recipe.metric_settings.items()
    }
    pipeline = attrs.evolve(
        recipe.pipeline, config=recipe.pipeline.info.cls.pin(absolute_paths(recipe.pipeline.config))
    )
    hooks = {name: absolute_paths(config) for name, config in recipe.hooks.items()}
    return attrs.evolve(
        recipe,
        pipeline=pipeline,
        parts=parts,
        metric_settings=settings,
        sample=absolute_paths(recipe.sample),
        hooks=hooks,
    )
