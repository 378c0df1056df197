"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input (a recipe, a path, an option), not with dalle-kit.

    The message is one line that names where the problem is, what it is and how to fix it.
    """

    exit_code = 2


class RecipeError(UserError):
    """A recipe value that cannot be used: names the file, the key, the problem and the fix. `value` is a value the
    key would take, as TOML (the default), so that a ``--set`` refused at that key can be shown its own fix."""

    def __init__(self, source: str, key: str, problem: str, fix: str = "", *, value: str = ""):
        self.source, self.key, self.problem, self.fix, self.value = source, key, problem, fix, value
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}" + (f"; fix: {fix}" if fix else ""))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, stripped ("" when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else ""


def one_line(exc: BaseException) -> str:
    """An error as one line: a `UserError`'s message, anything else's type and first line."""
    message = first_line(exc)
    return message if isinstance(exc, UserError) else f"{type(exc).__name__}: {message}".rstrip(": ")


def download_reason(exc: BaseException) -> str:
    """Why a download failed, whole, in one line: the last reason a URL gave (torchvision lists one per mirror,
    e.g. "Name or service not known" offline), else the exception's text with its lines joined."""
    text = " ".join(str(exc).split())
    reasons = re.findall(r"<urlopen error (?:\[Errno [^\]]*\] )?([^>]*)>", text)
    if reasons:
        return reasons[-1].strip() or text
    return text or type(exc).__name__
