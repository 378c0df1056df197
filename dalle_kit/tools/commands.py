"""The tools' commands: `dalle-kit report`, `compare`, `bench`, `new-plugin`, the `plugins` group (`list`, `show`,
`doctor`) and `recipe list` and `recipe show` (in the core's `recipe` group, beside `recipe check`).

The core's CLI does not import them: pyproject.toml declares each as an entry point of the ``dalle_kit.commands``
group (``recipe.list`` names command `list` of the group `recipe`), which `dalle_kit.cli` loads when it needs a
command it does not have (or lists them, for --help)."""

from __future__ import annotations

from pathlib import Path

import click

from ..schema import MAX_SEED


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
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED), help="Noise seed of the sample grids."
)
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
@click.option(
    "--cell",
    "cells",
    multiple=True,
    metavar="LABEL",
    help="Run only this cell (its label or id, as --dry-run lists them; repeatable); the table keeps the others' "
    "earlier results. Processes running other cells into the same OUT merge their results.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value in every cell, after the cell's own settings (repeatable), e.g. train.threads=1.",
)
@click.option("--dry-run", is_flag=True, help="Validate the grid and list its cells without running them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (each cell's training and evaluation).")
@click.option("--progress", is_flag=True, hidden=True, help="Progress bars are shown by default now.")
def bench_cmd(grid, out, runs_dir, cells, overrides, dry_run, quiet, progress):
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
    from .bench import load_grid, run_grid, select_cells

    registry = get_registry()
    if dry_run:
        spec = load_grid(grid, registry, overrides)
        chosen = select_cells(spec, cells)
        for cell in chosen:
            load_recipe(cell.base, registry, cell.overrides)
            click.echo(f"{cell.id}  {cell.name}")
        click.echo(
            f"{len(chosen)} cells, metrics {', '.join(spec.metrics)} on {spec.num_samples} samples, seed {spec.seed}"
        )
        return
    state = run_grid(
        grid, out, runs_dir=runs_dir, registry=registry, quiet=quiet, echo=click.echo, cells=cells, overrides=overrides
    )
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


# ---------------------------------------------------------------------------- recipes and plugins, listed
@click.command("list")
def recipe_list_cmd():
    """Recipes shipped by plugins, each with its pipeline, or "bench grid" for a grid of cells (run by `bench`)."""
    from .. import hints
    from .registry_index import listing

    recipes = listing()["recipes"]
    width = max((len(name) for name in recipes), default=0)
    grids = []
    for name, (path, distribution, version) in recipes.items():
        what = _what(path)
        grids += [name] if what == "bench grid" else []
        click.echo(f"{name:{width}s}  {what:12s} {distribution} {version}  {path}")
    grid = "bench-shapes" if "bench-shapes" in grids else grids[0] if grids else None  # the quick one first
    example = f", a bench grid with {hints.dalle_kit('bench ' + grid)}" if grid else ""
    click.echo(f"run one by its name: {hints.dalle_kit('run default')}{example}", err=True)


def _what(path: str) -> str:
    """What the recipe file at `path` runs: its pipeline's name, or "bench grid" (read as TOML only: no torch)."""
    import tomllib

    from ..schema import is_bench_grid

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "(unreadable)"
    if is_bench_grid(data):
        return "bench grid"
    pipeline = data.get("pipeline")
    return pipeline if isinstance(pipeline, str) else "(no pipeline)"


@click.command("show")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def recipe_show_cmd(file, overrides):
    """Print FILE resolved: every default filled in (a starting point for your own recipe)."""
    from ..recipe import load_recipe
    from ..registry import get_registry

    click.echo(load_recipe(file, get_registry(), overrides).dumps(), nl=False)


@click.group("plugins")
def plugins_cmd():
    """Inspect installed plugins and their parts."""


@plugins_cmd.command("list")
def plugins_list():
    """Every part by kind, with its distribution and version; broken plugins with their error."""
    from .. import hints
    from .registry_index import listing

    index = listing()  # no plugin (or torch) imported while the installed plugins are unchanged
    for kind, parts in index["parts"].items():
        click.echo(f"{kind}:")
        if not parts:
            click.echo("  (none)")
        for part in parts:
            doc = part["doc"].splitlines()
            click.echo(f"  {part['name']:16s} {part['origin']:22s} {doc[0] if doc else ''}")
    if index["problems"]:
        click.echo("problems:")
        for line in index["problems"]:
            click.echo(f"  {line}")
        click.echo(f"run `{hints.dalle_kit('plugins doctor')}` for fixes")


@plugins_cmd.command("show")
@click.argument("name")
def plugins_show(name):
    """Parameters, types, defaults and docs of every part called NAME; for a kind (generator, dataset, ...), its
    contract."""
    from .. import hints
    from ..errors import UserError, did_you_mean
    from .registry_index import listing

    index = listing()
    found = [(kind, part) for kind, parts in index["parts"].items() for part in parts if part["name"] == name]
    if not found and name in index["parts"]:
        from ..registry import get_registry
        from .contracts import kind_reference

        click.echo(kind_reference(name, get_registry()), nl=False)
        return
    if not found:
        names = {part["name"] for parts in index["parts"].values() for part in parts} | set(index["parts"])
        raise UserError(f"no part named '{name}'{did_you_mean(name, names)}; see `{hints.dalle_kit('plugins list')}`")
    for kind, part in found:
        click.echo(f"{kind} '{name}' from {part['origin']} ({part['where']})")
        if part["doc"]:
            click.echo("  " + part["doc"].replace("\n", "\n  "))
        section = "train" if kind == "pipeline" else "section"
        click.echo(f"  parameters ([{section}] keys):" if part["params"] else "  parameters: none")
        for row in part["params"]:
            click.echo(f"    {row['name']} ({row['type']}, default {row['default']}): {row['doc']}")
        click.echo()


@plugins_cmd.command("doctor")
def plugins_doctor():
    """Explain each plugin problem and how to fix it (exit status 1 when there is one)."""
    from ..registry import get_registry

    reg = get_registry()
    click.echo(
        f"{len(reg.plugins)} plugins loaded: "
        + ", ".join(f"{p.name} ({p.distribution} {p.version})" for p in reg.plugins)
    )
    if not reg.problems:
        click.echo("no problems found")
        return
    for p in reg.problems:
        click.echo(f"- {p.line()}\n  fix: {p.fix}")
    click.echo("Set DALLE_KIT_PLUGINS=name,name to load only some plugins (empty: built-ins only).")
    raise click.exceptions.Exit(1)  # problems found: a script or CI step running the doctor must see it fail
