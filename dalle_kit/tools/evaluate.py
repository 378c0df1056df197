"""Evaluating a run, a tool above the core: its pipeline draws the images once, each metric scores them, one
``kind = "eval"`` row per metric goes to the run's metrics.jsonl; and the `dalle-kit eval` command.

The built-in ``midrun-eval`` training plugin calls `evaluate_run` every ``[eval] every`` steps and once more when
a run has trained all its steps, and `check_metrics` before a new run's directory is made (hooks ``check_run``
and ``run_trained``); `dalle-kit bench` evaluates its cells with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import hints, progress
from ..errors import RecipeError, UserError
from ..schema import MAX_SEED

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation import Evaluation
    from ..parts import Metric
    from ..run import Run
    from ..scores import MetricResult


def evaluation_of(
    run: Run,
    *,
    num_samples: int,
    seed: int,
    metric_names: Sequence[str] = (),
    draw: Callable | None = None,
    cache_root: str | Path | None = None,
    train: Any = None,
) -> Evaluation:
    """The `Evaluation` of a run's latest weights: its pipeline's sampler (or `draw`, for weights in memory), its
    critic if the pipeline offers ``critic(run) -> (judge, label)``, its dataset and device. `train` replaces the
    recipe's ``[train]`` config for drawing (other sampling settings; the protocol's ``sampling`` says which)."""
    from .. import trainer
    from ..evaluation import Evaluation
    from .cache import file_digest

    pipeline = run.recipe.pipeline.info.cls(train if train is not None else run.recipe.train)

    def sampler():
        return draw if draw is not None else trainer.sampler(run, pipeline)

    def critic():
        make = getattr(pipeline, "critic", None)
        if make is None:
            raise UserError(
                f"pipeline '{run.recipe.pipeline.info.name}' has no critic (a network that scores "
                "image-caption pairs) to evaluate; drop the metric that needs one"
            )
        judge, label = make(run)
        found = run.checkpoints.good()
        step, digest = (found[0], file_digest(found[1])) if found else (0, "")
        return judge, f"{label} (step {step})", digest

    return Evaluation(
        run.parts.dataset(),
        num_samples=num_samples,
        seed=seed,
        sampler=sampler,
        critic=critic,
        device=run.device,
        cache_root=cache_root,
        metric_names=metric_names,
        quiet=run.quiet or not run.files.writes,
        sampling=pipeline.sampling(),
    )


def build_metrics(
    names: Sequence[str], registry, source: str = "--metric", settings: dict[str, Any] | None = None
) -> dict[str, Metric]:
    """Instantiate each named metric with its config from `settings` (the recipe's ``[eval.<metric>]`` tables)
    or its defaults, failing with one line on an unknown name."""
    if not names:
        raise UserError("no metrics to compute: give --metric NAME or list them in the recipe's [eval] metrics")
    metrics = {}
    for name in dict.fromkeys(names):
        try:
            info = registry.get("metric", name, source=source, key="metric")
        except RecipeError as exc:
            raise UserError(f"{source}: {exc.problem}; {exc.fix}") from None
        config = (settings or {}).get(name)
        metrics[name] = info.cls(config if config is not None else info.cls.Config())
    return metrics


def compute_metrics(evaluation: Evaluation, metrics: dict[str, Metric]) -> dict[str, MetricResult]:
    """Check every metric can run (weights present...) before any work, then compute them in order."""
    for metric in metrics.values():
        metric.check(evaluation)
    return {name: metric.compute(evaluation).check(name) for name, metric in metrics.items()}


def run_metrics(run: Run, metrics: Sequence[str] | None = None) -> dict[str, Metric]:
    """The metrics `metrics` names (default: the recipe's ``[eval] metrics``), built with the recipe's settings; a
    pipeline that draws no images, an unknown name or an empty list is refused in one line before anything is
    computed."""
    pipeline = run.recipe.pipeline.info
    if not pipeline.cls.draws_images:  # before the metrics: a hint to score it would fail
        raise UserError(f"{run.dir}: {hints.draws_nothing(pipeline.name)}")
    names = list(metrics) if metrics else list(run.recipe.eval.metrics)
    if not names:
        dataset = run.recipe.parts["data"].info.name if "data" in run.recipe.parts else ""
        raise UserError(
            f"{run.dir}: no metrics to compute (its recipe's [eval] metrics is empty); score it with "
            f"metrics that suit {dataset or 'its data'}: `{hints.eval_command(run.dir, run.registry.suggested_metrics(dataset))}`"
        )
    return build_metrics(names, run.registry, settings=run.recipe.metric_settings)


def evaluate_run(
    run: Run,
    metrics: Sequence[str] | None = None,
    num_samples: int | None = None,
    step: int | None = None,
    *,
    seed: int | None = None,
    draw: Callable | None = None,
    cache_root: str | Path | None = None,
    train: Any = None,
) -> dict[str, MetricResult]:
    """Score the run's latest weights and log one ``kind="eval"`` row per metric to metrics.jsonl.

    Defaults come from the recipe's ``[eval]`` table (metrics, num_samples) and its seed; `step`
    defaults to the latest checkpoint's. `draw` replaces the pipeline's sampler (for evaluating
    during training with the weights in memory); `train` replaces the recipe's ``[train]`` config for drawing
    (`dalle-kit eval --set`). Returns the results by metric name.
    """
    built = run_metrics(run, metrics)
    num_samples = num_samples or run.recipe.eval.num_samples
    seed = run.recipe.seed if seed is None else seed
    if step is None:
        state = run.checkpoints.load(prefixes=())
        if state is None and draw is None:
            raise UserError(f"{run.dir}: no checkpoint to evaluate yet; train first with {hints.dalle_kit('run')}")
        step = int(state["step"]) if state is not None else 0
    evaluation = evaluation_of(
        run,
        num_samples=num_samples,
        seed=seed,
        metric_names=list(built),
        draw=draw,
        cache_root=cache_root,
        train=train,
    )
    results = compute_metrics(evaluation, built)
    for name, result in results.items():
        run.log(step, kind="eval", **result.row(name))
    run.registry.hook.run_evaluated(run=run, step=step, results=results)
    return results


def evaluate_configured(run: Run) -> dict[str, MetricResult]:
    """The final evaluation (hook ``run_trained``): the recipe's ``[eval] metrics`` that have no row at its last step
    yet (all of them once training ends; those a stop during it left, on a resumed run); {} when none is left."""
    metrics = run.files.unscored(run.recipe.eval.metrics, run.recipe.train.steps)
    return evaluate_run(run, metrics) if metrics else {}


def check_metrics(run: Run, metrics: Sequence[str] | None = None) -> None:
    """Fail now, with one line, if a metric the run will compute cannot run here (call before training)."""
    from ..evaluation import Evaluation

    names = list(metrics) if metrics else list(run.recipe.eval.metrics)
    if not names:
        return
    built = build_metrics(names, run.registry, source=f"{run.dir}: [eval] metrics", settings=run.recipe.metric_settings)
    evaluation = Evaluation(
        run.parts.dataset(),
        num_samples=run.recipe.eval.num_samples,
        seed=run.recipe.seed,
        device=run.device,
        metric_names=list(built),
        quiet=run.quiet,
    )
    for metric in built.values():
        metric.check(evaluation)


@click.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option(
    "-m",
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Metric to compute (repeatable; default: the recipe's [eval] metrics). See `dalle-kit plugins list`.",
)
@click.option(
    "-n", "--num-samples", type=click.IntRange(min=1), help="Generated images per metric (default: [eval] num_samples)."
)
@click.option(
    "--seed", type=click.IntRange(0, MAX_SEED), help="Seed of the prompts and noise (default: the recipe's seed)."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="train.KEY=VALUE",
    help="A sampling setting of the pipeline for this evaluation (repeatable), e.g. --set train.sample_steps=25; "
    "the scores' protocol records it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(run_dir, metrics, num_samples, seed, settings, as_json, quiet):
    """Score the latest weights in RUN_DIR; each score is printed and logged to metrics.jsonl with its protocol.

    RUN_DIR is a run directory, or a run's name (runs/shapes, shapes) for its newest run."""
    progress.phase("starting: importing torch and the plugins, loading the run", quiet=quiet)
    try:
        from ..registry import get_registry
        from ..run import Run
        from .sample import check_setting_keys, train_with

        check_setting_keys(settings, "eval")
        run = Run.open(run_dir, get_registry(), quiet=quiet)  # quiet: no progress bars on stderr
        if not Path(run_dir).exists():
            click.echo(f"{run_dir}: its newest run, {run.dir}", err=True)
        # an unknown metric or setting is refused before the lock is taken (its file rewritten) or anything computed
        run_metrics(run, metrics)
        train = train_with(run, settings)
        run.files.lock()  # its rows go to metrics.jsonl, which a trainer resuming the run rewrites: one writer at a time
        try:
            progress.phase("loading the weights, checking the metrics", quiet=quiet)
            results = evaluate_run(run, list(metrics) or None, num_samples, seed=seed, train=train)
        finally:
            run.files.unlock()
    finally:
        progress.done()
    if as_json:
        click.echo(json.dumps({name: r.row(name) for name, r in results.items()}, indent=2))
        return
    for name, result in results.items():
        click.echo(result.line(name))
