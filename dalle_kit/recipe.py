"""TOML recipes: read with tomllib, overridden with ``--set``, validated against the parts' schemas.

Validation happens before any work starts; every problem is one `RecipeError` line naming the file,
the key and the fix. Recipes are data: a resolved recipe (defaults filled in) is written to each
run directory and is enough, with the weights, to rebuild the run's parts.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import tomli_w

from . import hints
from .errors import RecipeError, UserError, did_you_mean
from .registry import PartInfo, Registry
from .rundir import RECIPE_FILE
from .schema import Invalid, is_bench_grid, param, seed_in_range, structure, toml_repr, unstructure

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Part, Pipeline

P = TypeVar("P", bound="Part", covariant=True)

#: A run's name: 1 to 100 of letters, digits, '.', '_', '-', not starting with '.' or '-' (it names a directory under
#: the runs folder, so no path separators, NUL bytes, '..' or unicode look-alikes).
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def check_run_name(name: str, source: str) -> None:
    if not NAME_RE.fullmatch(name):
        shown = repr(name if len(name) <= 40 else name[:40] + "...")
        raise RecipeError(
            source,
            "key 'name'",
            f"{shown} is not a usable run name ({len(name)} characters)",
            "use 1 to 100 letters, digits, '.', '_' or '-', not starting with '.' or '-', e.g. name = \"my-run\"",
        )


@attrs.frozen
class SampleConfig:
    """The ``[sample]`` table: what the sample grids of a run show."""

    prompts: list[str] = param(["a red circle", "a blue square"], "prompts drawn in the sample grids, one row each")
    prompts_file: str | None = param(None, "text file with one prompt per line, added to prompts", path="file")
    every: int = param(500, "draw a grid every this many steps (0: only at the end)", validator=attrs.validators.ge(0))
    per_prompt: int = param(8, "images per prompt (columns of the grid)", validator=attrs.validators.gt(0))

    def all_prompts(self) -> list[str]:
        extra = []
        if self.prompts_file:
            extra = [
                line.strip()
                for line in Path(self.prompts_file).read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        return [*self.prompts, *extra]


@attrs.frozen
class LogConfig:
    """The ``[log]`` table: where a run's numbers and pictures go besides metrics.jsonl and samples/."""

    tensorboard: bool = param(
        True,
        "write TensorBoard event files to <run>/tensorboard (losses, learning rates, metrics with "
        "their protocol, sample grids); view all runs with: tensorboard --logdir runs",
    )


@attrs.frozen
class EvalConfig:
    """The ``[eval]`` table: metrics computed at the end of a run (and every ``every`` steps if > 0)."""

    metrics: list[str] = param([], "metric names (see `dalle-kit plugins list`)")
    num_samples: int = param(1000, "generated images per metric", validator=attrs.validators.gt(0))
    every: int = param(0, "also evaluate every this many steps (0: only at the end)", validator=attrs.validators.ge(0))


FINETUNE_MODES = ("full", "conditioning", "lora")


def _device_name(_, attribute, value):
    if value not in ("auto", "cpu", "cuda", "mps") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise Invalid("device", f"device '{value}' is not known", "use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _finetune_mode(_, attribute, value):
    if value not in FINETUNE_MODES:
        raise Invalid(
            "finetune",
            f"'{value}' is not a fine-tuning mode{did_you_mean(value, FINETUNE_MODES)}",
            f"use one of: {', '.join(FINETUNE_MODES)}",
        )


def _lora_rank(_, attribute, value):
    if value < 1:
        raise Invalid("lora_rank", f"must be >= 1, got {value}", "write lora_rank = 4 (for example)")


@attrs.frozen
class TopLevel:
    """The recipe's top-level keys (the tables are the parts', ``[train]`` the pipeline's, ``[sample]`` and ``[eval]``)."""

    name: str = param(doc="the run's name; run directories are runs/<name>-<timestamp>")
    pipeline: str = param(doc="the training procedure: a pipeline's name (see `dalle-kit plugins list`)")
    seed: int = param(0, "seed for weights, data order and noise", validator=seed_in_range)
    device: str = param("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'", validator=_device_name)
    description: str = param("", "free text")
    init_from: str = param(
        "", "start from this run's latest weights: a run directory, or runs/<name> for the newest run of that name"
    )
    finetune: str = param(
        "full",
        "with init_from: 'full' trains every weight, 'conditioning' only the layers that read the text, "
        "'lora' low-rank adapters on those layers",
        validator=_finetune_mode,
    )
    lora_rank: int = param(4, "rank of the low-rank adapters (finetune = 'lora')", validator=_lora_rank)
    recipe_format: int = param(
        0,
        "written into a run's recipe.toml: the format of recipes it follows (0: before formats "
        "were recorded); older formats are upgraded when read, newer ones refused",
    )
    written_by: str = param("", "written into a run's recipe.toml: the dalle-kit version that made the run")

    def __attrs_post_init__(self):  # cross-field rules
        if self.finetune != "full" and not self.init_from:
            raise Invalid(
                "finetune",
                f"finetune = '{self.finetune}' trains only part of a model but there is no init_from",
                'add init_from = "runs/<name>" (the run to start from) or remove finetune',
            )


#: The top-level keys (name -> attrs field), for code that needs to tell them from table names.
TOP_LEVEL = attrs.fields_dict(TopLevel)
#: The recipe format this dalle-kit writes. Raise it with an entry in `UPGRADES` when a key is renamed or removed.
RECIPE_FORMAT = 2
#: format -> function upgrading a parsed recipe of that format to the next one (a renamed key moved, a removed one
#: dropped), so run directories written by older versions keep loading for sample, eval and --resume.
UPGRADES: dict[int, Any] = {
    0: lambda data: data,  # 0 -> 1 only started recording the format
    1: lambda data: data,  # 1 -> 2 added the [log] table (its defaults apply)
}
COMMON_SECTIONS = {"sample": SampleConfig, "eval": EvalConfig, "log": LogConfig}


@attrs.frozen
class PartSpec(Generic[P]):
    info: PartInfo[P]
    config: Any


@attrs.frozen
class Recipe:
    source: str
    name: str
    pipeline: PartSpec[Pipeline]
    seed: int
    device: str
    description: str
    #: Section -> part; a section's kind is the pipeline's ``sections[section]``, known only when the recipe is read.
    parts: dict[str, PartSpec[Any]]
    sample: SampleConfig
    eval: EvalConfig
    metric_settings: dict[str, Any] = attrs.field(
        factory=dict
    )  # metric name -> its Config, from [eval.<metric>] tables
    log: LogConfig = attrs.field(factory=LogConfig)
    #: ``[hooks.<name>]`` tables that plugins declare (`register_settings`): name -> its Config, defaults filled in.
    hooks: dict[str, Any] = attrs.field(factory=dict)
    init_from: str = ""
    finetune: str = "full"
    lora_rank: int = 4

    @property
    def train(self):
        return self.pipeline.config

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every default filled in, ready for TOML."""
        from . import __version__

        data: dict[str, Any] = {
            "recipe_format": RECIPE_FORMAT,
            "written_by": f"dalle-kit {__version__}",
            "name": self.name,
            "pipeline": self.pipeline.info.name,
            "seed": self.seed,
            "device": self.device,
        }
        if self.description:
            data["description"] = self.description
        if self.init_from:
            data.update(init_from=self.init_from, finetune=self.finetune, lora_rank=self.lora_rank)
        for section, spec in self.parts.items():
            data[section] = {"name": spec.info.name, **unstructure(spec.config)}
        data["train"] = unstructure(self.pipeline.config)
        data["sample"] = unstructure(self.sample)
        data["eval"] = unstructure(self.eval)
        data["log"] = unstructure(self.log)
        for metric, config in self.metric_settings.items():
            data["eval"][metric] = unstructure(config)
        if self.hooks:
            data["hooks"] = {name: unstructure(config) for name, config in self.hooks.items()}
        return data

    def dumps(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def origins(self) -> dict[str, dict[str, str]]:
        """Which distribution and version provided each part (recorded in the run directory)."""
        specs = {"pipeline": self.pipeline, **self.parts}
        return {
            section: {
                "kind": s.info.kind,
                "name": s.info.name,
                "plugin": s.info.plugin.name,
                "distribution": s.info.plugin.distribution,
                "version": s.info.plugin.version,
            }
            for section, s in specs.items()
        }


def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecipeError(
            str(path),
            "",
            "file not found",
            f"check the path, or run `{hints.dalle_kit('recipe list')}` for the built-in recipes",
        )
    if path.is_dir():
        raise RecipeError(str(path), "", "is a directory, not a recipe file", "name a .toml file")
    if not path.is_file():  # a FIFO or a device: reading it could block or never end
        raise RecipeError(str(path), "", "is not a regular file", "name a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark (Notepad writes one) is dropped
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(str(path), "", f"invalid TOML: {exc}", "fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise RecipeError(str(path), "", "is not UTF-8 text", "save the recipe as UTF-8 TOML") from None


def flatten_keys(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: ``{"train": {"steps": 5}}`` -> ``{"train.steps": 5}`` (lists stay values)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.steps=500`` -> (["train", "steps"], 500); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE, for example --set train.steps=500")
    key, raw = text.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise UserError(f"--set {text!r}: bad key {key!r}; write SECTION.KEY=VALUE, for example train.steps=500")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: '{part}' is a value, not a table")
            node = child
        node[path[-1]] = value
    return data


def resolve_source(target: str, registry: Registry) -> Path:
    """A recipe argument is a path to a TOML file, a run directory, or the name of a registered recipe."""
    path = Path(target)
    if path.is_dir() and (path / RECIPE_FILE).is_file():
        return path / RECIPE_FILE
    if path.suffix == ".toml" or path.exists() or "/" in target:
        return path
    return Path(registry.recipe_path(target))


def load_recipe(
    target: str | Path, registry: Registry, overrides: Sequence[str] = (), *, check_name: bool = True
) -> Recipe:
    """The recipe `target` (a file, a run directory or a registered name) with `overrides` applied, validated. A
    value refused at a key an override set is that ``--set``'s fault, and the error names it, not the file (a run's
    recipe.toml is not to be edited; a recipe's own value there was replaced)."""
    path = resolve_source(str(target), registry)
    try:
        return validate(
            apply_overrides(read_toml(path), list(overrides)),
            registry,
            source=str(target),
            base_dir=path.parent,
            check_name=check_name,
        )
    except RecipeError as exc:
        at = _key_path(exc.key)  # the --set of that key, of a table above it, or of a key in the table refused
        named = [text for text in overrides if at and _nested(at, tuple(parse_override(text)[0]))]
        if not named:
            raise
        key = parse_override(named[-1])[0]
        fix = exc.fix
        if exc.value and tuple(key) == at:  # the fix as a --set, not as a line of the file
            fix = "for example --set " + hints.quote(f"{'.'.join(key)}={exc.value}")
        raise RecipeError(f"--set {named[-1]}", exc.key, exc.problem, fix) from None


_KEY = re.compile(r"(?:\[(?P<table>[^\]]+)\] ?)?(?:key '(?P<quoted>[^']+)'|(?P<bare>[\w-]+))?")


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _key_path(key: str) -> tuple[str, ...]:
    """The path of the key a validation error names (``[train] key 'lr'``, ``[generator] name``, ``key 'seed'``,
    ``[hooks.x]``); () for a text in another form."""
    match = _KEY.fullmatch(key)
    if not match or not key:
        return ()
    table = match["table"].split(".") if match["table"] else []
    leaf = match["quoted"] or match["bare"]
    return (*table, *([leaf] if leaf else []))


def upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` brought to `RECIPE_FORMAT` through `UPGRADES`; a recipe from a newer dalle-kit is one line."""
    fmt = data.get("recipe_format", 0)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 0:
        raise RecipeError(
            source,
            "key 'recipe_format'",
            f"expected a format number, got {fmt!r}",
            f"remove the key (it is written by dalle-kit) or set recipe_format = {RECIPE_FORMAT}",
        )
    if fmt > RECIPE_FORMAT:
        by = data.get("written_by") or "a newer dalle-kit"
        raise RecipeError(
            source,
            "key 'recipe_format'",
            f"format {fmt} was written by {by}; this dalle-kit reads formats up to {RECIPE_FORMAT}",
            f"upgrade dalle-kit: {hints.upgrade()}",
        )
    data = dict(data)
    while fmt < RECIPE_FORMAT:
        data = UPGRADES[fmt](data)
        fmt += 1
    data["recipe_format"] = fmt
    return data


def check_prompts(sample: SampleConfig, source: str) -> None:
    """The ``[sample]`` rules a pipeline that draws images needs: at least one prompt (every run ends with a grid of
    them), none blank, a prompts_file that reads as text. One `RecipeError` each, before any run directory exists."""
    try:
        prompts = sample.all_prompts()
    except (OSError, UnicodeDecodeError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RecipeError(
            source,
            "[sample] key 'prompts_file'",
            f"cannot be read ({cause})",
            "point it at a UTF-8 text file with one prompt per line",
        ) from None
    if not prompts:
        raise RecipeError(
            source,
            "[sample] key 'prompts'",
            "no prompts: the run draws its sample grids from them",
            'list at least one, for example prompts = ["a red circle"]',
        )
    for i, prompt in enumerate(sample.prompts, 1):
        if not prompt.strip():
            raise RecipeError(
                source, "[sample] key 'prompts'", f"prompt {i} is empty", "give it some text or remove it"
            )


def validate(
    data: dict[str, Any], registry: Registry, *, source: str, base_dir: Path | None = None, check_name: bool = True
) -> Recipe:
    """`data` (a parsed recipe) as a `Recipe`, or one `RecipeError`. ``check_name=False`` is for the recipe of a run
    directory that already exists: any run name is accepted (it no longer makes a path), and keys the installed
    parts no longer declare are ignored with a warning (as diffusers loads an older config), so runs written by
    another version keep loading for sample, eval and --resume."""
    data = upgrade(data, source)
    if is_bench_grid(data):  # handed to a command that reads recipes
        raise RecipeError(
            source,
            "key 'base'",
            "this file is a bench grid (base + [grid] or [[extra]] cells), not a recipe",
            f"run it with {hints.dalle_kit('bench ' + hints.quote(source))} (add --dry-run to check it without training)",
        )
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}

    def table(cls, given, section, shown=""):  # one table checked against its attrs class
        return structure(
            cls, given, source=source, section=section, base_dir=base_dir, ignore_unknown=not check_name, shown=shown
        )

    if not isinstance(data.get("pipeline", {}), str):  # left out, or written as a [pipeline] table
        raise RecipeError(
            source,
            "key 'pipeline'",
            "is required: it names the training procedure"
            if "pipeline" not in data
            else "expected a string naming the training procedure, got "
            + ("a [pipeline] table" if isinstance(data["pipeline"], dict) else toml_repr(data["pipeline"])),
            f'write pipeline = "NAME" at the top of the file, before any [table]; NAME one of: '
            f"{registry.names('pipeline')}",
        )
    top = attrs.asdict(table(TopLevel, {k: v for k, v in data.items() if k not in tables}, ""))
    if check_name:
        check_run_name(top["name"], source)

    pipeline_info = registry.get("pipeline", top["pipeline"], source=source, key="key 'pipeline'")
    pipeline_cls = pipeline_info.cls
    known_tables = {
        **{s: "part" for s in pipeline_cls.sections},
        "train": "train",
        **{s: "common" for s in COMMON_SECTIONS},
        "hooks": "hooks",
    }
    for section in tables:
        if section not in known_tables:
            raise RecipeError(
                source,
                f"[{section}]",
                f"unknown section for pipeline '{pipeline_info.name}'{did_you_mean(section, known_tables)}",
                f"remove it or use one of: {', '.join(known_tables)}",
            )

    parts: dict[str, PartSpec[Any]] = {}
    for section, kind in pipeline_cls.sections.items():
        given = dict(tables.get(section, {}))
        if "name" not in given:
            choices = registry.names(kind)
            raise RecipeError(
                source,
                f"[{section}] name",
                f"missing: pipeline '{pipeline_info.name}' needs a {kind.replace('_', ' ')}",
                f"add [{section}] with name = one of: {choices}",
            )
        name = given.pop("name")
        if not isinstance(name, str):
            raise RecipeError(
                source,
                f"[{section}] name",
                f"expected string, got {type(name).__name__} {toml_repr(name)}",
                f"use one of: {registry.names(kind)}",
            )
        info = registry.get(kind, name, source=source, key=f"[{section}] name")
        parts[section] = PartSpec(info, table(info.cls.Config, given, section, name))

    train = table(pipeline_cls.Config, tables.get("train", {}), "train", pipeline_info.name)
    sample = table(SampleConfig, tables.get("sample", {}), "sample")
    eval_table = dict(tables.get("eval", {}))
    metric_tables = {k: eval_table.pop(k) for k in list(eval_table) if isinstance(eval_table[k], dict)}
    evaluation = table(EvalConfig, eval_table, "eval")
    log = table(LogConfig, tables.get("log", {}), "log")
    for metric in evaluation.metrics:
        registry.get("metric", metric, source=source, key="[eval] metrics")
    metric_settings = {}
    for metric, given in metric_tables.items():  # [eval.<metric>]: that metric's settings
        info = registry.get("metric", metric, source=source, key=f"[eval.{metric}]")
        metric_settings[metric] = table(info.cls.Config, given, f"eval.{metric}", metric)

    hooks = hook_settings(tables.get("hooks", {}), registry, source, base_dir, strict=check_name)

    if top["init_from"] and not getattr(pipeline_cls, "finetunes", False):
        finetuning = registry.names("pipeline", where=lambda cls: getattr(cls, "finetunes", False))
        raise RecipeError(
            source,
            "key 'init_from'",
            f"pipeline '{pipeline_info.name}' cannot start from another run",
            f"remove init_from and finetune, or use a pipeline that fine-tunes: {finetuning}",
        )
    if pipeline_cls.draws_images:
        check_prompts(sample, source)
    if evaluation.metrics and not pipeline_cls.draws_images:
        raise RecipeError(
            source,
            "[eval] metrics",
            f"pipeline '{pipeline_info.name}' draws no images, so there is nothing for "
            f"{', '.join(evaluation.metrics)} to score",
            "remove [eval] metrics (score what it trains through a recipe that uses it, e.g. clip-score)",
        )

    return Recipe(
        source=source,
        name=top["name"],
        pipeline=PartSpec(pipeline_info, train),
        seed=top["seed"],
        device=top["device"],
        description=top["description"],
        parts=parts,
        sample=sample,
        eval=evaluation,
        metric_settings=metric_settings,
        init_from=top["init_from"],
        finetune=top["finetune"],
        lora_rank=top["lora_rank"],
        log=log,
        hooks=hooks,
    )


def hook_settings(
    table: dict[str, Any], registry: Registry, source: str, base_dir: Path | None, *, strict: bool
) -> dict[str, Any]:
    """Every ``[hooks.<name>]`` table the installed plugins declare, structured by its Config (its defaults where the
    recipe has none). A table no installed plugin declares is one `RecipeError`, or, in a run directory's recipe
    (``strict=False``: written where another plugin was installed), a warning and ignored."""
    out = {}
    for name, given in table.items():
        if name not in registry.settings or not isinstance(given, dict):
            declared = ", ".join(f"[hooks.{n}]" for n in registry.settings) or "none"
            if not strict:
                warnings.warn(f"{source}: [hooks.{name}] is declared by no installed plugin; ignored", stacklevel=3)
                continue
            raise RecipeError(
                source,
                f"[hooks.{name}]",
                "no installed plugin declares these settings" + did_you_mean(name, registry.settings),
                f"install the plugin that reads it or remove the table (declared here: {declared})",
            )
    for name, (config, _) in registry.settings.items():
        out[name] = structure(
            config,
            table.get(name, {}),
            source=source,
            section=f"hooks.{name}",
            base_dir=base_dir,
            ignore_unknown=not strict,
        )
    return out
