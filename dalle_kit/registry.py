"""Discovers plugins through the `dalle_kit` entry-point group and collects their parts.

Each plugin is loaded and called on its own, so one that fails to import, declares a bad hook,
registers a name that is taken or a class that breaks its kind's contract is recorded as a
`Problem` (with its distribution, version and cause) while every other plugin keeps working.
Built-ins are declared as entry points of the `dalle-kit` distribution, exactly like a third party's.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from types import ModuleType
from typing import Any, Generic, Literal, TypeVar, overload

import attrs
import pluggy

from . import hints, hookspecs
from .errors import RecipeError, UserError, did_you_mean, one_line
from .markers import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PROJECT, SELECT_ENV
from .parts import KINDS, Dataset, Metric, Part, Pipeline, TextEncoder, TrainConfig
from .schema import bad_defaults

#: Version of the hook API. A plugin module may declare ``DALLE_KIT_API = <int>``; another value is refused.
#: 2: the run a pipeline receives is split into services (``run.parts``, ``run.rng``, ``run.checkpoints``,
#: ``run.files``), `Training` has no ``rngs``, pipelines have no ``sampler`` (`Trainer.restore`).
HOOK_API_VERSION = 2

#: The registration hook of each of the core's kinds; a kind a plugin adds may bring its own (``register_kinds``).
HOOK_KINDS = {
    "register_text_encoders": "text_encoder",
    "register_metrics": "metric",
    "register_datasets": "dataset",
    "register_pipelines": "pipeline",
}
REGISTER_HOOKS = ["register_kinds", *HOOK_KINDS, "register_parts", "register_recipes", "register_settings"]
#: Events of a run (see `dalle_kit.trainer`); called while training and evaluating, not at discovery.
EVENT_HOOKS = [
    "modules_built",
    "train_start",
    "train_step_end",
    "train_checkpoint",
    "train_step_saved",
    "train_end",
    "check_run",
    "run_trained",
    "run_evaluated",
]
HOOK_NAMES = [*REGISTER_HOOKS, *EVENT_HOOKS]


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str


P = TypeVar("P", bound=Part, covariant=True)


@attrs.frozen
class PartInfo(Generic[P]):
    kind: str
    name: str
    cls: type[P]
    plugin: PluginInfo

    @property
    def origin(self) -> str:
        return f"{self.plugin.distribution} {self.plugin.version}"


@attrs.frozen
class Problem:
    plugin: PluginInfo
    cause: str
    fix: str

    def line(self) -> str:
        return f"{self.plugin.name} ({self.plugin.distribution} {self.plugin.version}): {self.cause}"


class Registry:
    """Every part by kind and name, the recipes plugins ship, and the problems met while loading."""

    def __init__(self) -> None:
        #: Every kind of part: the core's (`dalle_kit.parts.KINDS`) and those plugins add through ``register_kinds``.
        self.kinds: dict[str, type[Part]] = dict(KINDS)
        self.kind_checks: dict[str, list] = {}
        self.kind_plugins: dict[str, PluginInfo] = {}
        #: Registration hooks by name -> kind: the core's, and those the kinds plugins add declare.
        self.kind_hooks: dict[str, str] = dict(HOOK_KINDS)
        self.parts: dict[str, dict[str, PartInfo[Part]]] = {kind: {} for kind in KINDS}
        self.recipes: dict[str, tuple[str, PluginInfo]] = {}
        #: Recipe tables ``[hooks.<name>]`` that plugins declare (`register_settings`): name -> (Config, plugin).
        self.settings: dict[str, tuple[type, PluginInfo]] = {}
        self.plugins: list[PluginInfo] = []
        self.problems: list[Problem] = []
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)

    # ---------------------------------------------------------------- loading
    @classmethod
    def discover(cls, select: str | None = None, extra: Iterable[tuple[str, Any]] = ()) -> Registry:
        """Load the entry-point plugins (filtered by `select`, default $DALLE_KIT_PLUGINS) plus `extra` (name, module) pairs."""
        registry = cls()
        if select is None:
            select = os.environ.get(SELECT_ENV)
        wanted = None if select is None else {s.strip() for s in select.split(",") if s.strip()}
        eps = sorted(
            metadata.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, _dist_name(ep), ep.name),
        )
        for ep in eps:
            dist = _dist_name(ep)
            if wanted is not None and dist != BUILTIN_DISTRIBUTION and not ({ep.name, dist} & wanted):
                continue
            info = PluginInfo(ep.name, dist, _dist_version(ep), ep.value)
            try:
                module = ep.load()
            except BaseException as exc:  # a plugin's import may raise anything, SystemExit included
                if isinstance(exc, KeyboardInterrupt):
                    raise
                registry._problem(
                    info,
                    f"failed to import {ep.value}: {one_line(exc)}",
                    f"fix the plugin or uninstall it: {hints.pip('uninstall', dist)}",
                )
                continue
            registry.add_plugin(module, info)
        for name, module in extra:
            registry.add_plugin(
                module, PluginInfo(name, getattr(module, "__distribution__", name), "local", module.__name__)
            )
        registry._call_hooks()
        return registry

    def add_plugin(self, module: ModuleType | Any, info: PluginInfo) -> None:
        """Register `module`'s hooks; their names are checked once every plugin's kinds are known (`_call_hooks`)."""
        api = getattr(module, "DALLE_KIT_API", HOOK_API_VERSION)
        if api != HOOK_API_VERSION:
            self._problem(
                info,
                f"built for dalle-kit hook API {api}, this dalle-kit provides hook API {HOOK_API_VERSION}",
                f"install a version of {info.distribution} made for hook API {HOOK_API_VERSION}",
            )
            return
        if not self._signatures_ok(module, info, REGISTER_HOOKS):
            return
        try:
            self._pm.register(module, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._problem(
                info,
                f"invalid plugin: {' '.join(str(exc).split())}",
                "see the hook specifications in dalle_kit/hookspecs.py",
            )
            return
        self.plugins.append(info)

    def _signatures_ok(self, module: ModuleType | Any, info: PluginInfo, register_hooks: Iterable[str]) -> bool:
        """A registration hook must take `register` alone; a plugin with one that does not is left out entirely."""
        for attr in register_hooks:
            obj = getattr(module, attr, None)
            if obj is not None and callable(obj) and hasattr(obj, f"{PROJECT}_impl"):
                extra = [p for p in inspect.signature(obj).parameters if p != "register"]
                if extra:
                    self._problem(
                        info,
                        f"invalid hook: {attr}() takes {', '.join(repr(p) for p in extra)}, but the hook "
                        "passes only 'register'",
                        f"define it as {attr}(register)",
                    )
                    return False
        return True

    def _check_hook_names(self) -> None:
        """Each plugin's marked functions must be known hooks (the core's, or a kind's), and known hooks marked."""
        names = [*self.hook_names]
        for info in list(self.plugins):
            module = self._pm.get_plugin(info.name)
            if not self._signatures_ok(module, info, [h for h in self.kind_hooks if h not in HOOK_KINDS]):
                self._pm.unregister(module)
                self.plugins.remove(info)
                continue
            for attr, obj in inspect.getmembers(module, callable):
                marked = hasattr(obj, f"{PROJECT}_impl")
                if marked and attr not in names:
                    self._problem(
                        info,
                        f"'{attr}' is not a dalle_kit hook{did_you_mean(attr, names)}",
                        "rename it to one of: " + ", ".join(names),
                    )
                elif not marked and attr in names and inspect.isfunction(obj):
                    self._problem(
                        info,
                        f"'{attr}' lacks the @dalle_kit.hookimpl decorator and is ignored",
                        "decorate it with @dalle_kit.hookimpl",
                    )

    def suggested_metrics(self, dataset: str) -> list[str]:
        """The installed metrics that suit the dataset named `dataset` (its part's ``suggested_metrics``); ["fid"]
        when the dataset's plugin is not installed."""
        info = self.parts.get("dataset", {}).get(dataset)
        wanted = getattr(info.cls, "suggested_metrics", ()) if info is not None else ("fid",)
        return [m for m in wanted if m in self.parts.get("metric", {})]

    @property
    def hook_names(self) -> list[str]:
        """Every hook a plugin may implement: the core's and the registration hooks of the kinds plugins added."""
        extra = [h for h in self.kind_hooks if h not in HOOK_KINDS]
        return [
            "register_kinds",
            *HOOK_KINDS,
            *extra,
            "register_parts",
            "register_recipes",
            "register_settings",
            *EVENT_HOOKS,
        ]

    def _call_hooks(self) -> None:
        self._call("register_kinds")  # first: the kinds (and their registration hooks) the rest may name
        self._check_hook_names()
        for hook_name in [*self.kind_hooks, "register_parts", "register_recipes", "register_settings"]:
            self._call(hook_name)

    def _call(self, hook_name: str) -> None:
        by_module = {id(self._pm.get_plugin(p.name)): p for p in self.plugins}
        hook = getattr(self._pm.hook, hook_name, None)
        for impl in hook.get_hookimpls() if hook is not None else ():
            info = by_module.get(id(impl.plugin))
            if info is None:
                continue
            if hook_name == "register_recipes":
                register = self._recipe_register(info)
            elif hook_name == "register_settings":
                register = self._settings_register(info)
            elif hook_name == "register_kinds":
                register = self._kind_register(info)
            else:
                register = self._part_register(info, self.kind_hooks.get(hook_name))
            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except Exception as exc:
                self._problem(info, f"{hook_name} raised {one_line(exc)}", "fix the plugin")

    def _kind_register(self, info: PluginInfo):
        def register(base: type, checks=(), hook: str | None = None) -> None:
            kind = getattr(base, "kind", "") if isinstance(base, type) else ""
            if not (isinstance(base, type) and issubclass(base, Part)) or not kind:
                self._problem(
                    info,
                    f"{getattr(base, '__name__', base)!r} registered as a kind is not a dalle_kit.Part subclass "
                    "with a `kind`",
                    "subclass dalle_kit.Part and set kind = '<name>'",
                )
                return
            if kind in self.kinds:
                owner = self.kind_plugins.get(kind)
                by = f"{owner.name} ({owner.distribution})" if owner else "dalle-kit's core"
                self._problem(
                    info,
                    f"kind '{kind}' is already defined by {by}; this one is ignored",
                    f"rename the kind in {info.distribution}",
                )
                return
            if hook is not None and (not hook.startswith("register_") or hook in self.kind_hooks or hook in HOOK_NAMES):
                self._problem(
                    info,
                    f"kind '{kind}': registration hook {hook!r} is taken or not named register_<parts>",
                    f"name it register_{kind}s, or leave it out (its parts can register through register_parts)",
                )
                return
            self.kinds[kind] = base
            self.kind_checks[kind] = list(checks)
            self.kind_plugins[kind] = info
            self.parts[kind] = {}
            if hook is not None:
                self.kind_hooks[hook] = kind

        return register

    def _part_register(self, info: PluginInfo, hook_kind: str | None):
        def register(cls: type, name: str | None = None) -> None:
            kind: str = hook_kind if hook_kind else getattr(cls, "kind", "")
            base = self.kinds.get(kind)
            if base is None:
                self._problem(
                    info,
                    f"{getattr(cls, '__name__', cls)!r} has kind {kind!r}, which no installed plugin defines",
                    "register the kind with register_kinds, or install the plugin that defines it",
                )
                return
            if not (isinstance(cls, type) and issubclass(cls, base)):
                where = public_name(base)
                self._problem(
                    info,
                    f"{getattr(cls, '__name__', cls)!r} registered as a {kind} is not a subclass of {where}",
                    f"subclass {where}",
                )
                return
            name = name or cls.name
            if not name:
                self._problem(info, f"{cls.__name__} has no name", "set the class attribute name = '...'")
                return
            if not attrs.has(cls.Config):
                self._problem(
                    info, f"{kind} '{name}': Config is not an attrs class", "declare Config with @attrs.frozen"
                )
                return
            wrong = bad_defaults(cls.Config)
            if wrong:
                self._problem(
                    info,
                    f"{kind} '{name}': Config default {wrong[0]}",
                    "make the default match the annotation (or the annotation the default)",
                )
                return
            if kind == "pipeline":
                missing = [f.name for f in attrs.fields(TrainConfig) if f.name not in attrs.fields_dict(cls.Config)]
                if missing:
                    self._problem(
                        info,
                        f"pipeline '{name}': Config lacks the [train] settings {', '.join(missing)} that "
                        "every pipeline has",
                        "subclass dalle_kit.TrainConfig for the pipeline's Config",
                    )
                    return
            taken = self.parts[kind].get(name)
            if taken is not None:
                self._problem(
                    info,
                    f"{kind} '{name}' is already registered by {taken.plugin.name} ({taken.origin}); this one is ignored",
                    f"rename the {kind} in {info.distribution}",
                )
                return
            self.parts[kind][name] = PartInfo(kind, name, cls, info)

        return register

    def _settings_register(self, info: PluginInfo):
        def register(name: str, config: type) -> None:
            if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                self._problem(
                    info, f"settings name {name!r} is not a table name", "use lower-case letters, digits, '-'"
                )
            elif name in self.settings:
                owner = self.settings[name][1]
                self._problem(
                    info,
                    f"settings [hooks.{name}] are already declared by {owner.name} ({owner.distribution})",
                    f"rename the table in {info.distribution}",
                )
            elif not attrs.has(config):
                self._problem(
                    info, f"settings [hooks.{name}]: Config is not an attrs class", "declare it with @attrs.frozen"
                )
            elif wrong := bad_defaults(config):
                self._problem(
                    info, f"settings [hooks.{name}]: default {wrong[0]}", "make the default match the annotation"
                )
            else:
                self.settings[name] = (config, info)

        return register

    def _recipe_register(self, info: PluginInfo):
        def register(name: str, path) -> None:
            if name in self.recipes:
                self._problem(info, f"recipe '{name}' is already registered", "rename the recipe")
                return
            self.recipes[name] = (str(path), info)

        return register

    def _problem(self, info: PluginInfo, cause: str, fix: str) -> None:
        self.problems.append(Problem(info, cause, fix))

    @property
    def hook(self):
        """The event hooks of every loaded plugin (``registry.hook.train_step_end(trainer=..., ...)``)."""
        return self._pm.hook

    # ---------------------------------------------------------------- lookup
    # The core's kinds cannot be redefined and registration admits only subclasses of a kind's base, so the part
    # found for a core kind is an instance of that base's class: the overloads say which.
    @overload
    def get(
        self, kind: Literal["text_encoder"], name: str, *, source: str = ..., key: str = ...
    ) -> PartInfo[TextEncoder]: ...
    @overload
    def get(self, kind: Literal["metric"], name: str, *, source: str = ..., key: str = ...) -> PartInfo[Metric]: ...
    @overload
    def get(self, kind: Literal["dataset"], name: str, *, source: str = ..., key: str = ...) -> PartInfo[Dataset]: ...
    @overload
    def get(self, kind: Literal["pipeline"], name: str, *, source: str = ..., key: str = ...) -> PartInfo[Pipeline]: ...
    @overload
    def get(self, kind: str, name: str, *, source: str = ..., key: str = ...) -> PartInfo[Part]: ...
    def get(self, kind: str, name: str, *, source: str = "recipe", key: str = "name") -> PartInfo[Any]:
        """The part `name` of `kind`, or a one-line error with a "did you mean" and the choices."""
        if kind not in self.parts:
            raise RecipeError(
                source,
                key,
                f"kind of part '{kind}' is not defined by any installed plugin",
                f"install the plugin that defines it (see `{hints.dalle_kit('plugins list')}`)",
            )
        parts = self.parts[kind]
        if name in parts:
            return parts[name]
        hint = did_you_mean(name, parts)
        broken = [p for p in self.problems if name in p.cause or name == p.plugin.name]
        extra = (
            f" (plugin {broken[0].plugin.name} failed to load: see `{hints.dalle_kit('plugins doctor')}`)"
            if broken
            else ""
        )
        raise RecipeError(
            source,
            key,
            f"unknown {kind.replace('_', ' ')} '{name}'{hint}{extra}",
            f"use one of: {self.names(kind)}",
        )

    def names(self, kind: str, where: Callable[[type], object] | None = None) -> str:
        """The installed parts of `kind` (those whose class passes `where`), sorted and comma-joined for a fix line;
        "(none installed)" when there are none."""
        chosen = [n for n, info in self.parts.get(kind, {}).items() if where is None or where(info.cls)]
        return ", ".join(sorted(chosen)) or "(none installed)"

    def recipe_path(self, name: str) -> str:
        if name not in self.recipes:
            raise UserError(
                f"no recipe file or registered recipe named '{name}'{did_you_mean(name, self.recipes)}; "
                f"registered: {', '.join(sorted(self.recipes)) or '(none)'}"
            )
        return self.recipes[name][0]


def public_name(base: type) -> str:
    """Where plugin authors import a kind's base from: ``dalle_kit.TextEncoder``, or the family package that exports
    it (``dalle_kit_plugins.gan.Generator``)."""
    module = base.__module__
    if module.startswith("dalle_kit."):
        return f"dalle_kit.{base.__name__}"
    package = module.rsplit(".", 1)[0]
    exported = getattr(__import__(package, fromlist=["_"]), base.__name__, None) is base
    return f"{package if exported else module}.{base.__name__}"


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "(unknown)"


def _dist_version(ep: metadata.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "?"


_cached: dict[str | None, Registry] = {}


def get_registry() -> Registry:
    """The process-wide registry, loaded once per value of $DALLE_KIT_PLUGINS."""
    key = os.environ.get(SELECT_ENV)
    if key not in _cached:
        _cached[key] = Registry.discover()
    return _cached[key]
