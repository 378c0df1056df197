"""Typed parameters for parts: one `attrs` class is the schema for recipes, `plugins show` and saved configs.

A part declares::

    @attrs.frozen
    class Config:
        ngf: int = param(64, "width of the first layer", validator=attrs.validators.gt(0))

`structure()` turns a recipe table into that class (rejecting unknown keys and wrong types with
one line each) and `unstructure()` turns it back into TOML-ready data.
"""

from __future__ import annotations

import math
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal, Union, cast

import attrs

from . import hints
from .errors import RecipeError, did_you_mean, first_line

_MISSING = object()
#: The class of ``attrs.Factory(...)`` defaults (attrs' stubs declare ``Factory`` as a function returning the
#: factory's product, which `isinstance` cannot take).
FACTORY = cast("type[Any]", attrs.Factory)


#: Seeds are 0 .. 2**63 - 1: torch generators take 64 bits, and a run's named streams (`run.stream_seed`: a hash of
#: seed and name, or the seed plus a small offset for the streams that predate names) stay within them.
MAX_SEED = 2**63 - 1


def param(default: Any = _MISSING, doc: str = "", *, validator=None, path: str | None = None):
    """Declare a config field with its documentation.

    ``path="file"`` or ``path="dir"`` marks a value that names something that must exist on disk;
    the recipe validator checks it before any work starts.
    """
    metadata = {"doc": doc}
    if path:
        metadata["path"] = path
    if default is _MISSING:
        return attrs.field(metadata=metadata, validator=validator)
    if isinstance(default, (list, dict, set)):
        value = default
        return attrs.field(factory=lambda: type(value)(value), metadata=metadata, validator=validator)
    return attrs.field(default=default, metadata=metadata, validator=validator)


# Validators for numbers that torch would reject or that would poison training (nan, inf, out of range).
#: The largest float32: a setting that multiplies float32 tensors must fit it (a learning rate of 1e308 overflows).
FLOAT32_MAX = 3.4028234663852886e38


def finite_positive(_, attribute, value):
    """attrs validator: a finite number > 0 that fits float32 (learning rates); None passes (an optional field left
    unset)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= FLOAT32_MAX):
        raise ValueError(f"'{attribute.name}' must be a finite number > 0 (at most 3.4e38, float32), got {value}")


def finite_nonnegative(_, attribute, value):
    """attrs validator: a finite number >= 0 that fits float32 (weight decay, clipping thresholds)."""
    if value is not None and not (math.isfinite(value) and 0 <= value <= FLOAT32_MAX):
        raise ValueError(f"'{attribute.name}' must be a finite number >= 0 (at most 3.4e38, float32), got {value}")


def seed_in_range(_, attribute, value):
    """attrs validator: a seed from 0 to `MAX_SEED`."""
    if not 0 <= value <= MAX_SEED:
        raise Invalid("seed", f"{value} is out of range", f"use a seed from 0 to {MAX_SEED}")


def adam_betas(_, attribute, value):
    """attrs validator: Adam's (beta1, beta2), each in [0, 1) as torch.optim.Adam requires."""
    if not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1), got {list(value)}")


def type_name(tp: Any) -> str:
    """A short, TOML-flavoured name for a Python type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "none"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        if origin is tuple:
            return f"[{', '.join(type_name(a) for a in args)}]"
        return f"list[{type_name(args[0]) if args else 'any'}]"
    return {str: "string", int: "integer", float: "float", bool: "boolean", Path: "path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def toml_repr(value: Any) -> str:
    """`value` as a TOML file writes it: strings quoted, booleans in lower case, tuples and lists as arrays."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    return repr(value)


class _Mismatch(Exception):
    pass


class Invalid(ValueError):
    """Raised by a validator (or an ``attrs_post_init`` cross-field rule) to give `structure` the exact key, cause and fix
    of its one-line `RecipeError`: ``raise Invalid("seed", "is out of range", "use a seed from 0 to 9")``. A `key`
    without brackets is a key of the table being read; one that starts with ``[`` is used as written."""

    def __init__(self, key: str, cause: str, fix: str = ""):
        super().__init__(f"'{key}' {cause}")
        self.key, self.cause, self.fix = key, cause, fix


def _convert(value: Any, tp: Any) -> Any:
    """Check `value` (as read from TOML) against annotation `tp`; return it converted."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _convert(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_convert(v, args[0]) if args else v for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {k: _convert(v, args[1]) if args else v for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def fields_of(cls: type) -> tuple[attrs.Attribute, ...]:
    attrs.resolve_types(cls)
    return attrs.fields(cls)


def bad_defaults(cls: type) -> list[str]:
    """The fields of attrs class `cls` whose default does not fit its own annotation (``lr: float = "2e-4"``), each
    as one phrase; checked when a part registers, so a recipe that leaves the key out never gets a wrong type."""
    try:
        fields = fields_of(cls)
    except Exception as exc:  # an annotation that does not resolve
        return [f"its annotations do not resolve ({type(exc).__name__}: {exc})"]
    problems = []
    for field in fields:
        default = field.default
        if default is attrs.NOTHING:
            continue
        if isinstance(default, FACTORY):
            if default.takes_self:
                continue
            default = default.factory()
        try:
            _convert(default, field.type)
        except _Mismatch:
            problems.append(f"{field.name} = {default!r} is not a {type_name(field.type)}")
        except Exception:  # a type the recipe machinery does not know: nothing to check it against here
            continue
    return problems


def structure(
    cls: type,
    data: dict[str, Any],
    *,
    source: str,
    section: str,
    base_dir: Path | None = None,
    ignore_unknown: bool = False,
    shown: str = "",
):
    """Build `cls` from a recipe table, failing with one `RecipeError` line naming the key and fix (``shown``: the
    part, pipeline or metric whose Config this is, which ``dalle-kit plugins show`` describes).

    ``ignore_unknown`` (for the recipe of a run directory written by another version, as diffusers' configs do):
    keys `cls` does not declare are dropped with one warning naming them, instead of refused."""
    fields = {f.name: f for f in fields_of(cls)}
    prefix = f"[{section}] " if section else ""
    unknown = [key for key in data if key not in fields]
    if unknown and ignore_unknown:
        warnings.warn(
            f"{source}: {prefix}{', '.join(repr(k) for k in unknown)} {'is' if len(unknown) == 1 else 'are'} not "
            f"a setting of the installed version and {'is' if len(unknown) == 1 else 'are'} ignored (the run was "
            "written by another version)",
            stacklevel=2,
        )
        data = {k: v for k, v in data.items() if k in fields}
    for key in data:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise RecipeError(
                source,
                f"{prefix}key '{key}'",
                f"unknown {'top-level ' if not section else ''}key{did_you_mean(key, fields)}",
                f"remove it or use one of: {known}",
            )
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is attrs.NOTHING:
                raise RecipeError(
                    source, f"{prefix}key '{name}'", "is required", f"add {name} = <{type_name(field.type)}>"
                )
            continue
        value = data[name]
        try:
            converted = _convert(value, field.type)
        except _Mismatch:
            has_default = field.default is not attrs.NOTHING and not isinstance(field.default, FACTORY)
            example = toml_repr(field.default) if has_default else ""
            raise RecipeError(
                source,
                f"{prefix}key '{name}'",
                f"expected {type_name(field.type)}, got {type(value).__name__} {toml_repr(value)}",
                f"write {name} = <{type_name(field.type)}>" + (f", for example {name} = {example}" if example else ""),
                value=example,
            ) from None
        kind = field.metadata.get("path")
        if kind and converted:
            path = Path(converted)
            if not path.is_absolute() and base_dir is not None and not path.exists():
                path = base_dir / path
            ok = path.is_file() if kind == "file" else path.is_dir()
            if not ok:
                raise RecipeError(
                    source,
                    f"{prefix}key '{name}'",
                    f"{kind} not found: {converted}",
                    f"create it or point {name} at an existing {kind}",
                )
            converted = str(path)
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except Invalid as exc:
        key = exc.key if exc.key.startswith("[") else f"{prefix}key '{exc.key}'"
        raise RecipeError(source, key, exc.cause, exc.fix) from None
    except (ValueError, TypeError) as exc:
        msg = first_line(exc) or type(exc).__name__
        # attrs validators name the field in their message; point at it when we can.
        bad = next((n for n in kwargs if f"'{n}'" in msg), None)
        key = f"{prefix}key '{bad}'" if bad else prefix.strip() or "recipe"
        fix = (
            f"see `{hints.dalle_kit('plugins show ' + shown)}` for the allowed values"
            if shown
            else "write a value that meets that condition"
        )
        raise RecipeError(source, key, f"invalid value: {msg}", fix) from None


def unstructure(config: Any) -> dict[str, Any]:
    """Config instance -> plain TOML-ready dict (tuples become lists, None values are dropped)."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        return value

    return {k: plain(v) for k, v in attrs.asdict(config, recurse=True).items() if v is not None}


def is_bench_grid(data: dict[str, Any]) -> bool:
    """Whether a parsed TOML file is a `dalle-kit bench` grid (``base`` with ``[grid]`` or ``[[extra]]`` cells) rather
    than a recipe: the recipe loader refuses it, ``recipe list`` labels it (without importing torch)."""
    return "base" in data and ("grid" in data or "extra" in data)


def absolute_paths(config: Any) -> Any:
    """`config` with each path setting (``param(..., path=...)``) made absolute, so that a run's recipe names the same
    files from any working folder."""
    fields = attrs.fields(type(config)) if attrs.has(type(config)) else ()
    changes = {
        f.name: os.path.abspath(getattr(config, f.name))
        for f in fields
        if f.metadata.get("path") and getattr(config, f.name)
    }
    return attrs.evolve(config, **changes) if changes else config
