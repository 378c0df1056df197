"""Fix commands the toolkit prints, written so that they work exactly as printed where they are printed.

A hint that says ``pip install X`` installs into whatever ``pip`` is first on the user's PATH, which is often
not the environment dalle-kit runs in; ``dalle-kit run`` fails when the venv is not activated. So each
command here names the running environment's own programs: bare (``dalle-kit``) when the one on PATH is this
environment's, otherwise by path (``.venv/bin/dalle-kit``, relative to the current folder when it lies inside
it). Optional dependencies are named by the project's extras (``.venv/bin/pip install -e ".[mnist]"`` in a
source checkout, ``pip install "dalle-kit[mnist]"`` otherwise), system packages by the full apt command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

DISTRIBUTION = "dalle-kit"
_PLAIN = re.compile(r"[\w@%+=:,./-]+")


def quote(text: str) -> str:
    """`text` as one shell word: bare when safe, in double quotes when that is enough, else shlex's quoting."""
    if _PLAIN.fullmatch(text):
        return text
    if not re.search(r'["$`\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def shown_path(path: str | Path) -> str:
    """A path as a user types it from the current folder: relative when it lies inside it, else absolute."""
    path = Path(path)
    try:
        absolute = path.absolute()
        relative = absolute.relative_to(Path.cwd())
    except (ValueError, OSError):
        return str(path)
    return str(relative) if str(relative) != "." else "."


def script(name: str) -> str | None:
    """How to call this environment's console script `name`: bare when PATH finds this very one, its path
    when it exists beside the running interpreter, else None."""
    beside = Path(sys.executable).parent / name
    if not beside.is_file():
        return None
    found = shutil.which(name)
    try:
        if found and Path(found).resolve() == beside.resolve():
            return name
    except OSError:
        pass
    return quote(shown_path(beside))


def python() -> str:
    return quote(shown_path(sys.executable))


def dalle_kit(args: str = "") -> str:
    """The `dalle-kit` command of this environment followed by `args` (already shell words)."""
    program = script("dalle-kit") or f"{python()} -m dalle_kit"
    return f"{program} {args}".rstrip()


def download(url: str, path: str | Path) -> str:
    """A command that downloads `url` to `path` with this environment's Python (torch's downloader; no curl needed)."""
    code = f"import torch.hub; torch.hub.download_url_to_file({url!r}, {str(path)!r})"
    return f"{python()} -c {quote(code)}"


def pip(command: str, *args: str) -> str:
    """``<this environment's pip> COMMAND ARG...`` (each argument quoted as needed)."""
    program = script("pip") or f"{python()} -m pip"
    return f"{program} {command} " + " ".join(quote(a) for a in args)


def pip_install(*requirements: str) -> str:
    """``<this environment's pip> install REQ...``."""
    return pip("install", *requirements)


def source_checkout() -> Path | None:
    """The folder dalle-kit is installed from in editable mode (``pip install -e``), or None."""
    from importlib import metadata

    info: dict = {}
    for dist in metadata.distributions(name=DISTRIBUTION):  # a source folder's own *.egg-info may come first
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        if info:
            break
    url = info.get("url", "")
    if not info.get("dir_info", {}).get("editable") or not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    folder = Path(unquote(urlparse(url).path))
    return folder if (folder / "pyproject.toml").is_file() else None


def install_extra(extra: str) -> str:
    """The command that installs the project's optional dependencies `extra` into this environment."""
    checkout = source_checkout()
    if checkout is not None:
        return pip_install("-e", f"{shown_path(checkout)}[{extra}]")
    return pip_install(f"{DISTRIBUTION}[{extra}]")


def apt_install(package: str) -> str:
    """The full Debian/Ubuntu command that installs `package` (with sudo when not root)."""
    sudo = "sudo " if hasattr(os, "geteuid") and os.geteuid() != 0 else ""
    return f"{sudo}apt-get update && {sudo}apt-get install -y {package}"


def upgrade() -> str:
    """The command that brings this installation of dalle-kit up to date."""
    checkout = source_checkout()
    if checkout is not None:
        return f"git -C {quote(shown_path(checkout))} pull && " + pip_install("-e", shown_path(checkout))
    return pip_install("-U", DISTRIBUTION)


def reinstall() -> str:
    """The command that installs this version of dalle-kit again, its package metadata (entry points) with it."""
    checkout = source_checkout()
    if checkout is not None:
        return pip_install("-e", shown_path(checkout))
    from . import __version__

    return pip_install("--force-reinstall", "--no-deps", f"{DISTRIBUTION}=={__version__}")


def eval_command(run_dir: str | Path, metrics: list[str]) -> str:
    """``dalle-kit eval RUN --metric A --metric B``: the run scored with `metrics` (those that suit its dataset:
    `dalle_kit.registry.Registry.suggested_metrics`)."""
    return dalle_kit(f"eval {quote(str(run_dir))}" + "".join(f" --metric {m}" for m in metrics))


def draws_nothing(pipeline: str) -> str:
    """Why a run of `pipeline` (one whose ``draws_images`` is false: a CLIP, a codec) cannot be sampled or scored,
    and the command that says what its runs are for."""
    return (
        f"pipeline '{pipeline}' draws no images, so there is nothing to sample or score; what its runs are for: "
        f"{dalle_kit('plugins show ' + pipeline)}"
    )
