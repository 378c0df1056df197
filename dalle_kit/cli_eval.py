"""The `dalle-kit eval` and `dalle-kit bench` commands (added to the CLI group in cli.py)."""

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
        run.lock()  # its rows go to metrics.jsonl, which a trainer resuming the run rewrites: one writer at a time
        try:
            progress.phase("loading the weights, checking the metrics", quiet=quiet)
            results = evaluate_run(run, list(metrics) or None, num_samples, seed=seed)
        finally:
            run.unlock()
    finally:
        progress.done()
    if as_json:
        click.echo(json.dumps({name: r.row(name) for name, r in results.items()}, indent=2))
        return
    for name, result in results.items():
        click.echo(format_result(name, result))


@click.command("bench")
@click.argument("grid")
@click.option(
    "-o", "--out", type=click.Path(), help="Folder for the table, chart and progress (default: bench/<name>)."
)
@click.option("--runs-dir", type=click.Path(), help="Where the cells' run directories go (default: OUT/runs).")
@click.option("--dry-run", is_flag=True, help="Validate the grid and list its cells without running them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (each cell's training and evaluation).")
@click.option("--progress", is_flag=True, hidden=True, help="Progress bars are shown by default now.")
def bench_cmd(grid, out, runs_dir, dry_run, quiet, progress):
    """Train and evaluate every combination in GRID (a grid .toml or a shipped grid's name).

    \b
    name = "bench-shapes"
    base = "shapes"                   # recipe name or path
    seed = 0
    metrics = ["fid", "text-alignment"]
    num_samples = 500
    [set]                             # applied to every cell
    "train.steps" = 600
    [grid]                            # every combination is a cell
    loss = ["bce", "hinge"]           # bare table name: its part (loss.name)
    "discriminator.ndf" = [32, 64]    # dotted key: any recipe value

    Re-running skips finished cells; a failing cell is recorded with its error and the rest go on.
    Writes OUT/<name>.md, .csv, .json, .png and .html (the cells side by side).
    """
    from .tools.bench import load_grid, run_grid
    from .recipe import load_recipe
    from .registry import get_registry

    registry = get_registry()
    if dry_run:
        spec = load_grid(grid, registry)
        for cell in spec.cells():
            load_recipe(spec.base, registry, cell.overrides)
            click.echo(f"{cell.id}  {cell.label}")
        click.echo(
            f"{len(spec.cells())} cells, metrics {', '.join(spec.metrics)} on {spec.num_samples} samples, seed {spec.seed}"
        )
        return
    state = run_grid(grid, out, runs_dir=runs_dir, registry=registry, quiet=quiet, echo=click.echo)
    failed = [c for c in state["cells"] if c["status"] != "ok"]
    name = state["name"]
    folder = out or f"bench/{name}"
    click.echo(
        f"{len(state['cells']) - len(failed)} of {len(state['cells'])} cells ok; "
        f"wrote {folder}/{name}.md, .csv, .json, .png, .html"
    )
