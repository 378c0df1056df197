"""The `dalle-kit` command. Problems a user can fix print one line and exit with code 2."""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings

import click

from . import __version__
from . import hints
from .errors import UserError

#: Set by the global --traceback option: errors propagate with their traceback instead of one line (for plugin authors).
_show_traceback = False


def _registry():
    from .registry import get_registry

    return get_registry()


#: The entry-point group through which the tools above the core (`dalle_kit.tools`: report, compare, bench,
#: new-plugin) add their commands; this distribution declares them in pyproject.toml. The core imports no tool.
COMMANDS_GROUP = "dalle_kit.commands"


class _Group(click.Group):
    """The top-level group: the core's commands, and the tools' commands loaded when first needed (a name the core
    does not have, or the list for --help), so that `run`, `sample` and the rest never read the package metadata."""

    _tools: list[str] | None = None  # the tool commands' names, once loaded

    def _load_tools(self) -> list[str]:
        if self._tools is None:
            from importlib import metadata

            try:  # only this distribution's: the tools are dalle-kit's own, not a plugin's
                found = list(metadata.distribution(hints.DISTRIBUTION).entry_points.select(group=COMMANDS_GROUP))
            except metadata.PackageNotFoundError:  # imported from a folder that was never installed
                found = []
            for ep in found:
                self.add_command(ep.load(), ep.name)
            self._tools = [ep.name for ep in found]
        return self._tools

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and not self._load_tools():
            raise UserError(
                f"no command '{cmd_name}', and this installation of dalle-kit declares none of its tools' commands "
                f"(report, compare, bench, new-plugin): its package metadata predates them; reinstall it: "
                f"{hints.reinstall()}"
            )
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        self._load_tools()
        return super().list_commands(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dalle-kit")
@click.option(
    "--traceback",
    "traceback_",
    is_flag=True,
    help="Show the full traceback of an error instead of one line (for plugin authors).",
)
def cli(traceback_):
    """dalle-kit: text-conditional image generation from parts assembled by TOML recipes."""
    global _show_traceback
    _show_traceback = traceback_


# ---------------------------------------------------------------------------- run / sample
@cli.command()
@click.argument("recipe", required=False)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set train.steps=500.",
)
@click.option("--resume", type=click.Path(), help="Continue the run in this directory from its last checkpoint.")
@click.option(
    "--stop-at", type=click.IntRange(min=1), help="Stop after this step with a checkpoint, as if interrupted."
)
@click.option("--runs-dir", default="runs", show_default=True, help="Where run directories are made.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train in this many processes (torchrun, DistributedDataParallel; batch_size is per process).",
)
def run(recipe, overrides, resume, stop_at, runs_dir, quiet, nproc):
    """Train RECIPE (a .toml file or a built-in recipe name; default: the embedded shapes recipe)."""
    from . import progress

    progress.phase(
        "starting: importing torch and the plugins, checking the recipe, its data and metrics",
        quiet=quiet or "WORLD_SIZE" in os.environ,
    )
    from . import api

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        args = [
            *([recipe] if recipe else []),
            *(a for o in overrides for a in ("--set", o)),
            *(["--resume", resume] if resume else []),
            *(["--stop-at", str(stop_at)] if stop_at else []),
            "--runs-dir",
            runs_dir,
            *(["--quiet"] if quiet else []),
        ]
        from .launch import launch

        raise click.exceptions.Exit(launch(nproc, ["run", *args], recipe, overrides, resume))
    try:
        result = api.train(recipe, overrides, resume=resume, stop_at=stop_at, runs_dir=runs_dir, quiet=quiet)
    finally:
        progress.done()
    if not result.files.writes:  # another rank of a multi-process run: rank 0 reports
        return
    if result.results:
        from .evaluation import format_result

        for name, metric in result.results.items():
            click.echo(format_result(name, metric))
    report = result.dir / "report.html"
    click.echo(f"report: {report}" if report.is_file() else f"done: {result.dir}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("prompts", nargs=-1, required=True)
@click.option("-n", "num", default=8, show_default=True, help="Images per prompt.")
@click.option("-o", "--output", type=click.Path(), help="PNG to write (default RUN_DIR/sample.png).")
@click.option("--seed", default=0, show_default=True, help="Noise seed.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="train.KEY=VALUE",
    help="A sampling setting of the pipeline for this draw (repeatable), e.g. --set train.guidance_scale=1.0.",
)
def sample(run_dir, prompts, num, output, seed, settings):
    """Draw images for PROMPTS from the weights in RUN_DIR."""
    from . import progress

    progress.phase("drawing: importing torch and the plugins, loading the weights")
    try:
        from . import api

        path = api.sample(run_dir, prompts, n=num, out=output, seed=seed, settings=settings)
    finally:
        progress.done()
    click.echo(f"wrote {path}")


from .cli_eval import eval_cmd  # noqa: E402  (the metric command lives beside the code it drives)

cli.add_command(eval_cmd)


# ---------------------------------------------------------------------------- recipes
@cli.group()
def recipe():
    """Check, show and list recipes."""


@recipe.command("check")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def recipe_check(file, overrides):
    """Validate FILE against the installed parts without running anything."""
    from .recipe import load_recipe
    from .building import check_parts

    r = load_recipe(file, _registry(), overrides)
    if "data" in r.parts:  # data files present (or downloadable)
        r.parts["data"].info.cls(r.parts["data"].config).check()
    check_parts(r, prerequisites=False)  # every part can be built with these settings
    parts = ", ".join(f"{s}={spec.info.name}" for s, spec in r.parts.items())
    click.echo(f"{file}: ok (pipeline {r.pipeline.info.name}: {parts})")


@recipe.command("show")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def recipe_show(file, overrides):
    """Print FILE resolved: every default filled in (a starting point for your own recipe)."""
    from .recipe import load_recipe

    click.echo(load_recipe(file, _registry(), overrides).dumps(), nl=False)


@recipe.command("list")
def recipe_list():
    """Recipes shipped by plugins (run them by name)."""
    from .registry_index import listing

    for name, (path, distribution, version) in listing()["recipes"].items():
        click.echo(f"{name:20s} {distribution} {version}  {path}")


# ---------------------------------------------------------------------------- plugins
@cli.group()
def plugins():
    """Inspect installed plugins and their parts."""


@plugins.command("list")
def plugins_list():
    """Every part by kind, with its distribution and version; broken plugins with their error."""
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


@plugins.command("show")
@click.argument("name")
def plugins_show(name):
    """Parameters, types, defaults and docs of every part called NAME; for a kind (generator, dataset, ...), its
    contract."""
    from .errors import did_you_mean
    from .registry_index import listing

    index = listing()
    found = [(kind, part) for kind, parts in index["parts"].items() for part in parts if part["name"] == name]
    if not found and name in index["parts"]:
        from .contracts import kind_reference

        click.echo(kind_reference(name, _registry()), nl=False)
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


@plugins.command("doctor")
def plugins_doctor():
    """Explain each plugin problem and how to fix it (exit status 1 when there is one)."""
    reg = _registry()
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


#: errno values of a write the user can fix (space, file-size limit, read-only file system, permissions).
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
#: errno values of a path the user gave that the operating system cannot use (too long, a loop of links, a file
#: where a folder should be...).
_PATH_ERRORS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EINVAL, errno.ENXIO}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(text: object) -> str:
    """`text` on one line: control characters (a newline in a path the user gave) shown escaped, as Python writes them."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], str(text))


def main(argv=None) -> int:
    global _show_traceback
    _show_traceback = False
    warnings.formatwarning = lambda msg, cat, *a, **k: f"dalle-kit: warning: {_printable(msg)}\n"
    # numpy's notice when it meets the flush-to-zero mode training sets (torch.set_flush_denormal) is not the user's concern
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)
    try:
        code = cli.main(args=argv, prog_name="dalle-kit", standalone_mode=False)
    except UserError as exc:
        if _show_traceback:
            raise
        if os.environ.get("RANK", "0") == "0":  # in a multi-process run every rank meets it; one says so
            click.echo(f"dalle-kit: error: {_printable(exc)}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:  # click's own three lines (usage, hint, error) as one, with the --help hint
        if _show_traceback:
            raise
        hint = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "dalle-kit --help"
        click.echo(f"dalle-kit: error: {_one_line(exc.format_message()).rstrip('.')}; see `{hint}`", err=True)
        return 2
    except click.ClickException as exc:
        if _show_traceback:
            raise
        click.echo(f"dalle-kit: error: {_one_line(exc.format_message())}", err=True)
        return 2
    except OSError as exc:  # met outside dalle-kit's own checks: a full disk under a library, a path the OS refuses
        if _show_traceback or not (exc.errno in _WRITE_ERRORS or (exc.filename and exc.errno in _PATH_ERRORS)):
            raise
        from .files import WriteFailed

        line = (
            WriteFailed(exc.filename or "(a file)", exc)
            if exc.errno in _WRITE_ERRORS
            else f"{exc.filename}: {exc.strerror}; check the path"
        )
        click.echo(f"dalle-kit: error: {_printable(line)}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0  # click returns a command's Exit code here instead of raising it


if __name__ == "__main__":
    sys.exit(main())
