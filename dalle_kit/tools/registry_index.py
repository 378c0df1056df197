"""What `plugins list`, `plugins show` and `recipe list` print, answered without importing a plugin (or torch).

Discovering the plugins imports every one of them, and with them torch: a second or more before the
first line. What the listing commands print depends only on the installed plugins' files, so it is
kept in the cache (``<cache>/registry-index.json``, beside the content-keyed entries) with a
fingerprint of everything it was built from:

- the entry points of the ``dalle_kit`` group: name, target, distribution and version;
- the size and modification time of every Python file of each plugin's top-level package and of
  dalle_kit itself (an editable install changes no version);
- each folder on ``sys.path`` with its modification time (``pip install`` and ``pip uninstall`` change
  it, so a plugin's new dependency counts too);
- ``$DALLE_KIT_PLUGINS``, the Python version and this file's format.

The fingerprint needs entry-point metadata and ``stat`` calls only. When it matches, the commands answer
from the index; otherwise they discover the plugins as before, answer, and write the index again.
Commands that use the parts (``run``, ``recipe check``, ``plugins doctor`` ...) always discover.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..markers import ENTRY_POINT_GROUP, SELECT_ENV

INDEX_FILE = "registry-index.json"
INDEX_FORMAT = 1


def fingerprint() -> str:
    """A hash of what the registry is built from (see the module's docstring); imports no plugin."""
    from importlib import metadata

    h = hashlib.sha256(f"{INDEX_FORMAT}|{sys.version}|{os.environ.get(SELECT_ENV)!r}".encode())
    for entry in sys.path:
        h.update(f"\npath {entry}|{_mtime(entry or '.')}".encode())
    packages = {"dalle_kit"}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = ep.dist
        h.update(f"\nep {ep.name}|{ep.value}|{dist.name if dist else '?'}|{dist.version if dist else '?'}".encode())
        packages.add(ep.value.split(":")[0].split(".")[0])
    for package in sorted(packages):
        for path in _source_files(package):
            try:
                st = path.stat()
            except OSError:
                continue
            h.update(f"\nfile {path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _source_files(package: str) -> list[Path]:
    """The .py files of a top-level module or package, found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        files: list[Path] = []
        for location in spec.submodule_search_locations:
            for folder, dirs, names in os.walk(location):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                files.extend(Path(folder) / n for n in names if n.endswith(".py"))
        return sorted(files)
    return [Path(spec.origin)] if spec.origin and spec.origin not in ("built-in", "frozen") else []


def describe(cls: type) -> list[dict[str, str]]:
    """One dict per field of the attrs class `cls` (a part's Config): name, type, default, doc."""
    import attrs

    from ..schema import FACTORY, fields_of, toml_repr, type_name

    rows = []
    for f in fields_of(cls):
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, FACTORY):
            default = toml_repr(f.default.factory())
        else:
            default = toml_repr(f.default) if f.default is not None else "(none)"
        rows.append({"name": f.name, "type": type_name(f.type), "default": default, "doc": f.metadata.get("doc", "")})
    return rows


def describe_registry(registry) -> dict[str, Any]:
    """Everything the listing commands print, as plain data."""
    parts = {}
    for kind, infos in registry.parts.items():
        parts[kind] = [
            {
                "name": name,
                "origin": info.origin,
                "doc": inspect.cleandoc(info.cls.__doc__ or ""),
                "where": f"{info.cls.__module__}.{info.cls.__qualname__}",
                "params": describe(info.cls.Config),
            }
            for name, info in sorted(infos.items())
        ]
    return {
        "parts": parts,
        "recipes": {
            name: [path, plugin.distribution, plugin.version]
            for name, (path, plugin) in sorted(registry.recipes.items())
        },
        "problems": [p.line() for p in registry.problems],
    }


def _path() -> Path:
    from .cache import default_root

    return default_root() / INDEX_FILE


def load(key: str) -> dict[str, Any] | None:
    """The index, when it was built from exactly what is installed now (`key`: `fingerprint()`); else None."""
    try:
        data = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or data.get("fingerprint") != key:
        return None
    return data.get("registry")


def listing() -> dict[str, Any]:
    """What the listing commands print: from the index if it is current, else from a discovery (then stored)."""
    key = fingerprint()  # before importing: a file changed meanwhile makes the next call discover again
    found = load(key)
    if found is not None:
        return found
    from ..registry import get_registry

    data = describe_registry(get_registry())
    from ..files import WriteFailed, WriteRefused, atomic_write_text

    try:
        atomic_write_text(_path(), json.dumps({"format": INDEX_FORMAT, "fingerprint": key, "registry": data}))
    except (OSError, WriteFailed, WriteRefused):  # a read-only or full cache only costs speed
        pass
    return data
