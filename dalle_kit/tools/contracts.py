"""The plugin reference, rendered from the code: the hooks (`dalle_kit.hookspecs`), each core kind's base class
(`dalle_kit.parts`) and each kind the built-in plugins add (through ``register_kinds``, as any family does), with
their docstrings and signatures. One source: docs/contracts.md is this module's
output, and a test fails when the two differ.

    python -m dalle_kit.tools.contracts > docs/contracts.md
"""

from __future__ import annotations

import inspect
import typing

import attrs

from .. import hints, hookspecs, trainer
from ..parts import KINDS, Part, TrainConfig
from ..registry import EVENT_HOOKS, Registry, public_name

HEADER = """\
# Plugin contracts (generated)

Generated from the code by `python -m dalle_kit.tools.contracts > docs/contracts.md`; do not edit by hand
(a test compares the two). The guide with examples is [plugins.md](plugins.md).
"""


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(func) -> str:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return "(...)"
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    if func.__name__ == "__init__":  # a constructor is shown as the call that builds the part: no `-> None`
        sig = sig.replace(return_annotation=inspect.Signature.empty)
    return str(sig.replace(parameters=params)).replace("'", "")  # annotations are strings (postponed evaluation)


def _own_members(cls: type):
    """Public methods, properties and class attributes that `cls` itself declares, in source order."""
    hints = typing.get_type_hints(cls, include_extras=False) if hasattr(cls, "__annotations__") else {}
    own_hints = getattr(cls, "__annotations__", {})
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if name in ("Config",):
            continue
        if isinstance(value, property):
            yield "property", name, value.fget, None
        elif inspect.isfunction(value):
            yield "method", name, value, None
        elif isinstance(value, classmethod):
            yield "method", name, value.__func__, None
        elif name in own_hints:
            yield "attribute", name, None, (hints.get(name, own_hints[name]), value)


def _type_text(tp) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def render() -> str:
    out = [HEADER, "## Hooks", "", inspect.cleandoc(hookspecs.__doc__ or ""), ""]
    for name, func in vars(hookspecs).items():
        if inspect.isfunction(func) and name.startswith("register_"):
            out += [f"### `{name}{_signature(func)}`", "", _doc(func), ""]
    out += ["## Training events", "", _doc(trainer), ""]
    for name in EVENT_HOOKS:
        func = getattr(hookspecs, name)
        out += [f"### `{name}{_signature(func)}`", "", _doc(func), ""]
    out += ["## What a pipeline's setup returns: `dalle_kit.Training`", "", _doc(trainer.Training), ""]
    out += [f"- `{f.name}: {_type_text(f.type)}`" for f in attrs.fields(trainer.Training)]
    out += ["", "## The [train] settings of every pipeline: `dalle_kit.TrainConfig`", "", _doc(TrainConfig), ""]
    out += [f"- `{f.name}` (default {f.default!r}): {f.metadata.get('doc', '')}" for f in attrs.fields(TrainConfig)]
    out += ["", "## Every part: `dalle_kit.Part`", "", _doc(Part), ""]
    for what, name, func, attr in _own_members(Part):
        if what == "attribute":
            out.append(f"- `{name}: {_type_text(attr[0])} = {attr[1]!r}`")
        elif what == "method" and name != "__init__":
            doc = _doc(func)
            out.append(f"- `{name}{_signature(func)}`" + (": " + " ".join(doc.split()) if doc else ""))
    out += ["", "## Kinds of part", ""]
    out += _kinds({kind: (f"dalle_kit.{cls.__name__}", None, cls) for kind, cls in KINDS.items()})
    builtins = Registry.discover(
        select=""
    )  # the built-in plugins only: the reference does not follow what is installed
    hooks = {kind: hook for hook, kind in builtins.kind_hooks.items()}
    added = {
        kind: (public_name(cls), hooks.get(kind), cls) for kind, cls in builtins.kinds.items() if kind not in KINDS
    }
    out += [
        "## Kinds the built-in families add",
        "",
        "Registered by their family's plugin through `register_kinds`, exactly as a third-party family adds one; "
        "each comes with its own registration hook.",
        "",
    ]
    out += _kinds(added)
    return "\n".join(out).rstrip() + "\n"


def kind_reference(kind: str, registry: Registry) -> str:
    """The contract of one kind (`dalle-kit plugins show KIND`): where its base class is imported from, the plugin
    and hook that register it, its docstring and members."""
    base = registry.kinds[kind]
    hooks = {k: hook for hook, k in registry.kind_hooks.items()}
    origin = registry.kind_plugins.get(kind)
    lines = _kinds({kind: (public_name(base), hooks.get(kind), base)})
    if kind in KINDS or origin is None:
        where = "a core kind of dalle-kit"
    else:
        where = f"added by {origin.name} ({origin.distribution})"
    lines.insert(1, f"({where}; its parts: `{hints.dalle_kit('plugins list')}`; the reference: docs/contracts.md)")
    return "\n".join(lines).rstrip() + "\n"


def _kinds(kinds: dict[str, tuple[str, str | None, type]]) -> list[str]:
    out: list[str] = []
    for kind, (public, hook, cls) in kinds.items():
        out += [f"### {kind}: `{public}`" + (f" (hook `{hook}(register)`)" if hook else ""), "", _doc(cls), ""]
        for what, name, func, attr in _own_members(cls):
            if what == "attribute":
                tp, value = attr
                out.append(f"- `{name}: {_type_text(tp)} = {value!r}`")
            elif what == "property":
                out.append(f"- property `{name}`" + (f": {_doc(func).splitlines()[0]}" if _doc(func) else ""))
            else:
                label = (
                    f"`{name}{_signature(func)}`"
                    if name != "__init__"
                    else f"built as `{cls.__name__}{_signature(func)}`"
                )
                doc = _doc(func)
                out.append(f"- {label}" + (": " + " ".join(doc.split()) if doc else ""))
        out.append("")
    return out


if __name__ == "__main__":
    print(render(), end="")
