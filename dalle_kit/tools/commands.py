"""The tools' commands: `dalle-kit report`, `compare`, `bench` and `new-plugin`.

The core's CLI does not import them: pyproject.toml declares each as an entry point of the ``dalle_kit.commands``
group, which `dalle_kit.cli` loads when it needs a command it does not have (or lists them all, for --help)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="HTML file to write (default RUN_DIR/report.html).")
def report_cmd(run_dir, output):
    """Write RUN_DIR's report.html: metrics with their protocols, loss curves, sample grids, recipe and parts.

    One self-contained page (images embedded), refreshed by every training run and evaluation; prints its path."""
    from ..errors import UserError
    from ..files import check_target
    from .report import write_report
    from ..run import resolve_run_dir

    if output is not None and Path(output).is_dir() and not Path(output).is_symlink():
        raise UserError(f"-o {output}: is a directory; name an HTML file, e.g. -o {Path(output) / 'report.html'}")
    if output is not None:
        check_target(output)
    click.echo(write_report(resolve_run_dir(run_dir), output))


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN RUN...")
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="compare",
    show_default=True,
    type=click.Path(),
    help="Folder for compare.html and compare.md.",
)
@click.option(
    "-p",
    "--prompt",
    "prompts",
    multiple=True,
    metavar="TEXT",
    help="Prompt of the sample grids (repeatable; default: each run's first 4 [sample] prompts).",
)
@click.option("--seed", default=0, show_default=True, help="Noise seed of the sample grids.")
@click.option("-n", "num", type=click.IntRange(min=1), default=4, show_default=True, help="Images per prompt.")
@click.option("--no-grids", is_flag=True, help="Do not draw sample grids (recipes and metrics only).")
def compare_cmd(run_dirs, out_dir, prompts, seed, num, no_grids):
    """Compare runs side by side: recipe differences, metrics (one column per protocol) and sample grids drawn now
    from each run's newest checkpoint with the same prompts and seed. Prints the paths it wrote."""
    from .compare import write_comparison

    for path in write_comparison(run_dirs, out_dir, prompts=prompts, seed=seed, n=num, grids=not no_grids):
        click.echo(path)


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
    from ..recipe import load_recipe
    from ..registry import get_registry
    from .bench import load_grid, run_grid

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


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Example to include (repeatable): generator, discriminator, loss, text_encoder, dataset, metric, pipeline, "
    "kind (a new kind of part with one part), hook (a training-event hook with its [hooks.NAME] table).",
)
@click.option(
    "--dir", "directory", default=".", show_default=True, type=click.Path(), help="Where to write the package."
)
def new_plugin_cmd(name, kinds, directory):
    """Write a ready plugin package NAME: entry point, example parts, conformance tests, README."""
    from .. import hints
    from .scaffold import new_plugin as scaffold

    root = scaffold(name, list(kinds), directory)
    shown = hints.shown_path(root)
    shown = shown if Path(shown).is_absolute() or shown.startswith(".") else f"./{shown}"  # pip -e wants a path
    click.echo(
        f"wrote {root}\nnext: {hints.pip_install('-e', f'{shown}[test]')} && {hints.dalle_kit('plugins list')} && "
        f"{hints.python()} -m pytest {hints.quote(shown)}"
    )
