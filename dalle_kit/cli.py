"""The `dalle-kit` command. Problems a user can fix print one line and exit with code 2."""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING

import click

from . import __version__
from . import hints
from .errors import UserError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: Set by the global --traceback option: errors propagate with their traceback instead of one line (for plugin authors).
_show_traceback = False


def _registry():
    from .registry import get_registry

    return get_registry()


#: The entry-point group through which the tools above the core (`dalle_kit.tools`) add their commands; this
#: distribution declares them in pyproject.toml. The core imports no tool. An entry point's name says where its
#: command goes: a plain name (`report`, `plugins`) is a top-level command, "GROUP.NAME" (`recipe.list`) is command
#: NAME of the core's group GROUP. Each is loaded only when it is run or a --help lists it, so `run`, `sample`,
#: `recipe check` and the rest never read the package metadata.
COMMANDS_GROUP = "dalle_kit.commands"

_tool_commands: dict[str, EntryPoint] | None = None


def _declared_tools() -> dict[str, EntryPoint]:
    """This distribution's entry points of COMMANDS_GROUP by name (only its own: the tools are dalle-kit's, not a
    plugin's)."""
    global _tool_commands
    if _tool_commands is None:
        from importlib import metadata

        try:
            found = metadata.distribution(hints.DISTRIBUTION).entry_points.select(group=COMMANDS_GROUP)
        except metadata.PackageNotFoundError:  # imported from a folder that was never installed
            found = metadata.EntryPoints(())
        _tool_commands = {ep.name: ep for ep in found}
    return _tool_commands


def _declared_in_checkout(name: str) -> bool:
    """Whether the source checkout dalle-kit is installed from in editable mode declares the tool command `name`
    (its package metadata, written at install time, may predate it)."""
    import tomllib

    checkout = hints.source_checkout()
    if checkout is None:
        return False
    try:
        project = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return name in project.get("project", {}).get("entry-points", {}).get(COMMANDS_GROUP, {})


class _Group(click.Group):
    """A group of the core's commands, with the tools' commands whose entry-point names put them here (see
    COMMANDS_GROUP), each loaded the first time it is needed."""

    def __init__(self, *args, tools_prefix: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.tools_prefix = tools_prefix  # "" for the top level, "recipe." for `recipe`

    def _tools(self) -> dict[str, EntryPoint]:
        n = len(self.tools_prefix)
        return {
            name[n:]: ep
            for name, ep in _declared_tools().items()
            if name.startswith(self.tools_prefix) and "." not in name[n:]
        }

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands:
            tools = self._tools()
            if cmd_name in tools:
                self.add_command(tools[cmd_name].load(), cmd_name)
            elif _declared_in_checkout(self.tools_prefix + cmd_name) or not _declared_tools():
                command = " ".join([*ctx.command_path.split()[1:], cmd_name])
                raise UserError(
                    f"no command '{command}': this installation's package metadata predates the tools' commands; "
                    f"reinstall it: {hints.reinstall()}"
                )
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        return sorted({*self.commands, *self._tools()})


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
@click.option(
    "--resume",
    type=click.Path(),
    help="Continue the run in this directory (or the newest run of this name) from its last checkpoint.",
)
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
    for name, metric in result.results.items():
        click.echo(metric.line(name))
    report = result.dir / "report.html"
    click.echo(f"report: {report}" if report.is_file() else f"done: {result.dir}")


# ---------------------------------------------------------------------------- recipes
@cli.group(cls=_Group, tools_prefix="recipe.")
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
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # a bare group (click >= 8.2)
            exc.show()  # its help as click writes it (stderr, exit status 2), not flattened into one line
            return 2
        words = exc.ctx.command_path.split()[1:] if exc.ctx is not None else []  # the subcommands, not the program
        hint = hints.dalle_kit(" ".join([*words, "--help"]))  # as this shell calls it: `.venv/bin/dalle-kit run --help`
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
