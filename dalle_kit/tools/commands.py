"""The `dalle-kit report` and `dalle-kit compare` commands (added to the CLI group in cli.py)."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="HTML file to write (default RUN_DIR/report.html).")
def report_cmd(run_dir, output):
    """Write RUN_DIR's report.html: metrics with their protocols, loss curves, sample grids, recipe and parts.

    One self-contained page (images embedded), refreshed by every training run and evaluation; prints its path."""
    from pathlib import Path

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
