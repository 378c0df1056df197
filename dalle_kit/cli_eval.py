"""The `dalle-kit eval` command (added to the CLI group in cli.py)."""

from __future__ import annotations

import json

import click


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
@click.option("--seed", type=int, help="Seed of the prompts and noise (default: the recipe's seed).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(run_dir, metrics, num_samples, seed, as_json, quiet):
    """Score the latest weights in RUN_DIR; each score is printed and logged to metrics.jsonl with its protocol."""
    from . import progress

    progress.phase("starting: importing torch and the plugins, loading the run", quiet=quiet)
    try:
        from .evaluation import evaluate_run, format_result, run_metrics
        from .registry import get_registry
        from .run import Run

        run = Run.open(run_dir, get_registry(), quiet=quiet)  # quiet: no progress bars on stderr
        # an unknown metric name is refused before the lock is taken (its file rewritten) or anything computed
        run_metrics(run, metrics)
        run.files.lock()  # its rows go to metrics.jsonl, which a trainer resuming the run rewrites: one writer at a time
        try:
            progress.phase("loading the weights, checking the metrics", quiet=quiet)
            results = evaluate_run(run, list(metrics) or None, num_samples, seed=seed)
        finally:
            run.files.unlock()
    finally:
        progress.done()
    if as_json:
        click.echo(json.dumps({name: r.row(name) for name, r in results.items()}, indent=2))
        return
    for name, result in results.items():
        click.echo(format_result(name, result))
