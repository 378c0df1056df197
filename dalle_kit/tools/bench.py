"""`dalle-kit bench GRID.toml`: train and evaluate every combination of a base recipe's alternatives.

A grid file::

    name = "bench-shapes"
    base = "shapes"                     # a recipe name or a path (relative to the grid file)
    seed = 0                            # every cell trains and evaluates with this seed
    metrics = ["fid", "text-alignment"]
    num_samples = 500

    [set]                               # overrides applied to every cell (any recipe key)
    "train.steps" = 600

    [grid]                              # every combination of these lists is one cell
    loss = ["bce", "hinge"]             # a bare table name picks its part: loss.name
    "discriminator.ndf" = [32, 64]      # a dotted key overrides any value

    [[extra]]                           # optional: a cell beside the grid, from another base recipe
    label = "vae"                       # (another pipeline, say), with the same seed and protocol; the
    base = "shapes-vae"                 # grid's [set] is not applied (its keys may not exist there),
    set = {"train.steps" = 600}         # only the cell's own overrides
    published = {fid = "9.8 ± 0.9"}     # optional: a published value to print beside the cell's own
    # real = "train"                    # a calibration cell: nothing trains; the first num_samples images of
                                        # that split are scored as if generated (real against real)

A grid may consist of ``[[extra]]`` cells alone (no ``[grid]``): a table of cells, each with its own settings.

Every cell's recipe is validated before anything trains. Cells run one after the other; a failing
cell is recorded with its one-line error and the rest continue. Progress is saved to
``<out>/<name>.json`` after each cell, and a re-run skips the cells already finished with the same
settings (failed cells are tried again). ``cells`` picks some cells by label or id (the others keep what
``<name>.json`` holds for them), ``overrides`` adds ``--set`` values to every cell; processes that run
different cells of one grid into one ``out`` folder side by side merge their records under a lock. Results go to ``<name>.md``, ``.csv``, ``.json`` and ``.png``, and
``<name>.html`` shows the cells side by side (`dalle_kit.tools.compare`: recipe differences, metrics, each cell's last grid).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import fcntl
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from .. import hints
from ..errors import RecipeError, UserError, did_you_mean, one_line
from .evaluate import evaluate_run
from ..files import atomic_write_bytes, atomic_write_text, make_folder
from ..recipe import TOP_LEVEL, flatten_keys, load_recipe, parse_override, read_toml
from ..schema import Invalid, is_bench_grid, param, seed_in_range, structure
from ..registry import Registry, get_registry

STATE_VERSION = 1
PER_CELL = "per cell"


def _metric_names(_, attribute, value):
    if not value:
        raise Invalid("metrics", "expected a non-empty list of metric names", 'write metrics = ["fid"]')


def _grid_axes(_, attribute, value):
    axes = flatten_keys(value)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise Invalid(
                f"[grid] {key}", f"expected a non-empty list of alternatives, got {values!r}", f"write {key} = [a, b]"
            )


@attrs.frozen
class ExtraCell:
    """An ``[[extra]]`` cell beside the grid: its own base recipe and settings (the grid's ``[set]`` does not apply)."""

    label: str = param(doc="shown in the first axis' column")
    base: str = param(doc="recipe name or path")
    set: dict[str, Any] = param({}, "recipe values for this cell (dotted keys or tables)")
    published: dict[str, str] = param(
        {}, 'metric -> a published value for this cell, printed beside its own (e.g. {fid = "6.8 ± 0.5"})'
    )
    real: str = param(
        "",
        "a split of the base recipe's dataset: a calibration cell that trains nothing and scores "
        "that split's first num_samples images as if generated",
    )


@attrs.frozen
class GridFile:
    """A bench grid file: every combination of ``[grid]``'s values (plus the ``[[extra]]`` cells) trained from ``base``
    with ``[set]`` and scored with ``metrics`` on ``num_samples`` images."""

    name: str = param(doc="the grid's name (its reports are OUT/<name>.md, .csv, .json, .png)")
    base: str = param(doc="recipe name or path every grid cell starts from")
    grid: dict[str, Any] = param(
        {},
        "key -> list of values; every combination is a cell (may be left out when [[extra]] cells are given)",
        validator=_grid_axes,
    )
    seed: int = param(0, "the seed of every cell", validator=seed_in_range)
    metrics: list[str] = param([], "metric names scored for every cell", validator=_metric_names)
    num_samples: int = param(1000, "generated images per metric", validator=attrs.validators.gt(0))
    description: str = param("", "free text")
    set: dict[str, Any] = param({}, "recipe values applied to every grid cell (dotted keys or tables)")
    extra: list[dict[str, Any]] = param([], "[[extra]] cells beside the grid (label, base, set)")


#: The column of a grid made of [[extra]] cells alone.
CELL_AXIS = "cell"


@attrs.frozen
class Cell:
    params: dict[str, Any]  # grid key -> value, in grid order
    overrides: list[str]  # --set strings, base settings then this cell's
    run_name: str
    base: str  # the recipe the overrides apply to
    published: dict[str, str] = attrs.field(factory=dict)  # metric -> published value, printed beside the cell's
    real: str = ""  # a calibration cell: the split whose images are scored as if generated
    extra_label: str = ""  # an [[extra]] cell's own label

    @property
    def name(self) -> str:
        """What `--cell` calls it: an [[extra]] cell's label, a grid cell's ``key=value, ...``."""
        return self.extra_label or self.label

    @property
    def id(self) -> str:
        key = self.overrides if not self.real else [*self.overrides, f"real={self.real}"]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


@attrs.frozen
class Grid:
    source: Path
    name: str
    base: str
    seed: int
    metrics: list[str]
    num_samples: int
    description: str
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]
    extra: list[dict[str, Any]] = attrs.field(factory=list)  # {"label", "base", "set"} cells beside the grid
    overrides: list[str] = attrs.field(factory=list)  # --set values for every cell, after the cell's own settings

    @property
    def columns(self) -> list[str]:
        """The grid's axes, or the one column of a grid made of [[extra]] cells alone."""
        return list(self.axes) or [CELL_AXIS]

    def cells(self) -> list[Cell]:
        keys = self.columns
        combos = itertools.product(*self.axes.values()) if self.axes else ()
        specs: list[tuple[dict[str, Any], str, dict[str, Any], dict[str, Any], str]] = [
            (
                dict(zip(keys, combo, strict=True)),
                self.base,
                {**self.fixed, **dict(zip(keys, combo, strict=True))},
                {},
                "",
            )
            for combo in combos
        ]
        for extra in self.extra:  # its label stands in the first axis' column, "-" in the others
            params = {k: (extra["label"] if i == 0 else "-") for i, k in enumerate(keys)}
            specs.append((params, extra["base"], dict(extra["set"]), extra.get("published", {}), extra.get("real", "")))
        cells = []
        n_grid = len(specs) - len(self.extra)
        for i, (params, base, settings, published, real) in enumerate(specs):
            run_name = f"{self.name}-{i:02d}"
            overrides = [*(_override(k, v) for k, v in settings.items()), *self.overrides]
            overrides += [_override("seed", self.seed), _override("name", run_name), _override("eval.metrics", [])]
            extra_label = self.extra[i - n_grid]["label"] if i >= n_grid else ""
            cells.append(Cell(params, overrides, run_name, base, dict(published), real, extra_label))
        return cells

    def settings(self) -> dict[str, Any]:
        """What a finished cell's results depend on besides its overrides (a change re-runs the cell)."""
        return {"base": self.base, "metrics": self.metrics, "num_samples": self.num_samples, "seed": self.seed}


def _key_path(key: str) -> str:
    """A grid key as a recipe path: a bare table name means its part's name."""
    if "." in key or key in TOP_LEVEL:
        return key
    return f"{key}.name"


def _override(key: str, value: Any) -> str:
    text = tomli_w.dumps({"v": value}).strip()
    return f"{_key_path(key)}={text[len('v = ') :]}"


#: Keys the grid file itself sets for every cell; ``--set`` may not change them.
GRID_KEYS = {"seed": "seed", "name": "name", "eval.metrics": "metrics", "eval.num_samples": "num_samples"}


def load_grid(target: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Grid:
    """The grid file `target` (a path or a shipped grid's name), checked, with ``--set`` `overrides` for every cell."""
    normalised = []
    for override in overrides:
        keys, value = parse_override(override)
        key = ".".join(keys)
        if key in GRID_KEYS:
            raise UserError(
                f"--set {override}: the grid sets {key} for every cell; change {GRID_KEYS[key]} in {target} instead"
            )
        normalised.append(_override(key, value))  # one spelling per value: `x=a` and `x="a"` make one cell
    path = Path(target)
    if not path.exists() and path.suffix != ".toml" and target in registry.recipes:
        path = Path(registry.recipes[str(target)][0])
    data = read_toml(path)
    source = str(target)
    if not is_bench_grid(data) and ("pipeline" in data or "train" in data):  # a recipe, handed to bench
        example = registry.recipes.get("bench-shapes")
        like = f", like {hints.shown_path(example[0])}" if example else ""
        raise RecipeError(
            source,
            "",
            "this file is a recipe, not a bench grid",
            f"train it with `{hints.dalle_kit('run ' + hints.quote(source))}`, or bench a grid file with "
            f'a name, base = "{source}", metrics and a [grid] table of the values to vary{like}',
        )
    spec = structure(GridFile, data, source=source, section="")
    for metric in spec.metrics:
        registry.get("metric", metric, source=source, key="key 'metrics'")

    def resolve_base(base: str) -> str:
        return str(path.parent / base) if not Path(base).exists() and (path.parent / base).exists() else base

    extras = [structure(ExtraCell, e, source=source, section=f"extra #{i + 1}") for i, e in enumerate(spec.extra)]
    if not spec.grid and not extras:
        raise UserError(
            f"{source}: [grid]: needs at least one key with a list of values, or [[extra]] cells; "
            'write loss = ["bce", "hinge"]'
        )
    for i, e in enumerate(extras):
        unknown = sorted(set(e.published) - set(spec.metrics))
        if unknown:
            raise UserError(
                f"{source}: extra #{i + 1}: published value for '{unknown[0]}', which is not among the grid's "
                f"metrics ({', '.join(spec.metrics)}); name one of them"
            )
    cells_extra = [
        {
            "label": e.label,
            "base": resolve_base(e.base),
            "set": flatten_keys(e.set),
            "published": dict(e.published),
            "real": e.real,
        }
        for e in extras
    ]
    return Grid(
        path,
        spec.name,
        resolve_base(spec.base),
        spec.seed,
        spec.metrics,
        spec.num_samples,
        spec.description,
        flatten_keys(spec.set),
        flatten_keys(spec.grid),
        cells_extra,
        normalised,
    )


def select_cells(grid: Grid, wanted: Sequence[str]) -> list[Cell]:
    """The grid's cells whose label or id is in `wanted` (every cell when it is empty), or one line naming the first
    that matches none."""
    cells = grid.cells()
    if not wanted:
        return cells
    for name in wanted:
        if not any(name in (c.name, c.id) for c in cells):
            raise UserError(
                f"{grid.source}: no cell labelled '{name}'{did_you_mean(name, [c.name for c in cells])}; its cells: "
                f"{'; '.join(c.name for c in cells)} (with their ids: "
                f"{hints.dalle_kit(f'bench {hints.quote(str(grid.source))} --dry-run')})"
            )
    return [c for c in cells if c.name in wanted or c.id in wanted]


# ------------------------------------------------------------------ running
def run_grid(
    target: str | Path,
    out: str | Path | None = None,
    *,
    runs_dir: str | Path | None = None,
    registry: Registry | None = None,
    quiet: bool = True,
    echo=print,
    cells: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train and evaluate every cell, or those labelled (or with the ids) in `cells`, skipping finished ones, with
    `overrides` (``--set`` strings) for every cell; then write the reports. Returns the state."""
    registry = registry or get_registry()
    grid = load_grid(target, registry, overrides)
    out = Path(out) if out is not None else Path("bench") / grid.name
    runs_dir = Path(runs_dir) if runs_dir is not None else out / "runs"
    selected = select_cells(grid, cells)
    for cell in selected:  # every recipe is checked before any work
        try:
            recipe = load_recipe(cell.base, registry, cell.overrides)
        except UserError as exc:
            raise UserError(f"{grid.source}: cell [{cell.name}]: {exc}") from None
        if cell.real:
            dataset = recipe.parts["data"]
            if cell.real not in dataset.info.cls.splits:
                raise UserError(
                    f"{grid.source}: cell [{cell.name}]: real = '{cell.real}' is not a split of dataset "
                    f"'{dataset.info.name}'; use one of: {', '.join(dataset.info.cls.splits)}"
                )
    make_folder(out)
    # Denormal floats slow GAN training down on CPUs (benchmarks/results/train-throughput.md); flushing them keeps a
    # grid's cost predictable. Every cell runs under the same setting.
    from ..api import flush_denormals

    with flush_denormals():
        return _run_cells(grid, selected, out, runs_dir, registry, quiet, echo)


def _run_cells(
    grid: Grid, cells: list[Cell], out: Path, runs_dir: Path, registry: Registry, quiet: bool, echo
) -> dict[str, Any]:
    from .. import api

    state_path = out / f"{grid.name}.json"
    with _state_lock(state_path):
        state = _load_state(state_path, grid)
    done = {c["id"]: c for c in state["cells"]}
    order = [c.id for c in grid.cells()]
    state["cells"] = []
    for n, cell in enumerate(cells, 1):
        previous = done.get(cell.id)
        if previous and previous["status"] == "ok":
            echo(f"[{n}/{len(cells)}] {cell.name}: done before, skipped")
            state["cells"].append(previous)
            continue
        record = {
            "id": cell.id,
            "params": cell.params,
            "overrides": cell.overrides,
            "status": "running",
            "run_dir": (previous or {}).get("run_dir"),
            **({"published": cell.published} if cell.published else {}),
            **({"real": cell.real} if cell.real else {}),
        }
        state["cells"].append(record)
        if cell.real:
            echo(
                f"[{n}/{len(cells)}] {cell.name}: evaluating {', '.join(grid.metrics)} on {grid.num_samples} real "
                f"'{cell.real}' images"
            )
            try:
                t1 = time.monotonic()
                results = _evaluate_real(grid, cell, registry)
                record.update(
                    train_seconds=0,
                    eval_seconds=round(time.monotonic() - t1, 1),
                    status="ok",
                    results={
                        m: {"values": r.values, "protocol": r.protocol.to_dict(), "details": r.details}
                        for m, r in results.items()
                    },
                )
            except Exception as exc:
                record["status"] = "failed"
                record["error"] = one_line(exc)
                echo(f"[{n}/{len(cells)}] {cell.name}: failed: {record['error']}")
            _save_state(state_path, state, order)
            continue
        echo(f"[{n}/{len(cells)}] {cell.name}: training")
        try:
            run = _train_cell(api, grid, cell, runs_dir / cell.id, registry, quiet)
            record["run_dir"] = str(run.dir)
            if run.interrupted:
                _save_state(state_path, state, order)
                raise KeyboardInterrupt
            # The run's own training clock (it carries over a resumed cell's earlier stretches): wall time here
            # would count only what this call trained.
            trained = [r for r in run.files.read_metrics() if r.get("kind") == "train"]
            record["train_seconds"] = round(trained[-1]["time"], 1) if trained else None
            echo(f"[{n}/{len(cells)}] {cell.name}: evaluating {', '.join(grid.metrics)} on {grid.num_samples} samples")
            t1 = time.monotonic()
            results = evaluate_run(run, grid.metrics, grid.num_samples, seed=grid.seed)
            record["eval_seconds"] = round(time.monotonic() - t1, 1)
            record["results"] = {
                m: {"values": r.values, "protocol": r.protocol.to_dict(), "details": r.details}
                for m, r in results.items()
            }
            record["status"] = "ok"
        except Exception as exc:  # a failing cell is recorded and the rest go on
            record["status"] = "failed"
            record["error"] = one_line(exc)
            echo(f"[{n}/{len(cells)}] {cell.name}: failed: {record['error']}")
        _save_state(state_path, state, order)
    state = _save_state(state_path, state, order)  # with the cells other processes finished meanwhile
    write_reports(state, out / grid.name)
    return state


def _evaluate_real(grid: Grid, cell: Cell, registry: Registry):
    """A calibration cell's scores: the first num_samples images of the cell's split, scored as if generated."""
    from ..evaluation import Evaluation
    from .evaluate import build_metrics, compute_metrics

    recipe = load_recipe(cell.base, registry, cell.overrides)
    spec = recipe.parts["data"]
    dataset = spec.info.cls(spec.config)
    images = dataset.load(cell.real)
    n = min(grid.num_samples, len(images))
    metrics = build_metrics(grid.metrics, registry, settings=recipe.metric_settings)
    evaluation = Evaluation(
        dataset,
        num_samples=n,
        seed=grid.seed,
        generated=images.images[:n],
        prompts=images.captions[:n],
        metric_names=list(metrics),
    )
    return compute_metrics(evaluation, metrics)


def _train_cell(api, grid: Grid, cell: Cell, cell_runs: Path, registry: Registry, quiet: bool):
    """Train the cell's run, continuing an interrupted one of the same cell if there is one (a run that trained all
    its steps is returned as it is)."""
    existing = sorted(
        p for p in cell_runs.glob("*") if (p / "checkpoints").is_dir() and any((p / "checkpoints").iterdir())
    )
    if existing:
        from ..checkpoint import latest_checkpoint
        from ..run import Run

        run = Run.open(existing[-1], registry, quiet=quiet)
        last = latest_checkpoint(run.checkpoints.folder)
        if last is not None and last[0] >= run.recipe.train.steps:  # trained: stopped while the bench evaluated it
            return run
        return api.train(resume=existing[-1], quiet=quiet, registry=registry)
    return api.train(cell.base, cell.overrides, runs_dir=cell_runs, quiet=quiet, registry=registry)


def _load_state(path: Path, grid: Grid) -> dict[str, Any]:
    axes = grid.axes or {CELL_AXIS: [e["label"] for e in grid.extra]}
    fresh = {
        "version": STATE_VERSION,
        "name": grid.name,
        "source": str(grid.source),
        "description": grid.description,
        "settings": grid.settings(),
        "fixed": grid.fixed,
        "axes": axes,
        "cells": [],
    }
    if not path.is_file():
        return fresh
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return fresh
    if not _comparable(old, grid.settings()):
        return fresh  # other metrics, sample count or seed: nothing finished before is comparable
    fresh["cells"] = old.get("cells", [])
    return fresh


def _comparable(old: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a saved state's cells were scored as `settings` say (same state format, metrics, samples, seed)."""
    return old.get("version") == STATE_VERSION and old.get("settings") == settings


class _state_lock:
    """Holds an flock on the output folder itself while a grid's state file in it is read or merged and written
    (a lock on the folder leaves no lock file behind; grids sharing a folder wait for each other's short writes)."""

    def __init__(self, path: Path):
        self.folder = path.parent

    def __enter__(self) -> None:
        self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock


def _save_state(path: Path, state: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """Write `state` merged with the records the file holds for cells this process has not run (another process
    running other cells of the grid into the same folder), in the grid's cell order. Returns the merged state."""
    mine = {c["id"] for c in state["cells"]}
    with _state_lock(path):
        try:
            on_disk = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            on_disk = {}
        others = [c for c in on_disk.get("cells", []) if c["id"] not in mine]
        others = others if _comparable(on_disk, state["settings"]) else []
        cells = sorted(
            [*state["cells"], *others], key=lambda c: order.index(c["id"]) if c["id"] in order else len(order)
        )
        merged = {**state, "cells": cells}
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
    return merged


# ------------------------------------------------------------------ reports
def _value_columns(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value name) for every value any cell reported, in metric order."""
    columns: list[tuple[str, str]] = []
    for metric in state["settings"]["metrics"]:
        for cell in state["cells"]:
            for key in cell.get("results", {}).get(metric, {}).get("values", {}):
                if (metric, key) not in columns:
                    columns.append((metric, key))
    return columns


def _protocols(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """metric -> its protocol across cells; a field that differs between cells reads "per cell" (see the CSV)."""
    merged: dict[str, dict[str, Any]] = {}
    for cell in state["cells"]:
        for metric, result in cell.get("results", {}).items():
            if metric not in merged:
                merged[metric] = dict(result["protocol"])
                continue
            for key, value in result["protocol"].items():
                if merged[metric].get(key) != value:
                    merged[metric][key] = PER_CELL
    return merged


def markdown(state: dict[str, Any]) -> str:
    axes = list(state["axes"])
    columns = _value_columns(state)
    s = state["settings"]
    lines = [f"# {state['name']}", ""]
    if state.get("description"):
        lines += [state["description"], ""]
    fixed = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in state["fixed"].items())
    lines += [
        f"Base recipe `{s['base']}`"
        + (f" with {fixed}" if fixed else "")
        + f"; every cell trained with seed {s['seed']} "
        f"and evaluated on {s['num_samples']} generated images with seed {s['seed']}.",
        "",
        "## Protocol",
        "",
        "| metric | protocol | n generated | n reference | reference split | extractor | weights sha256 | seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    protocols = _protocols(state)
    for metric, p in protocols.items():
        split = f"{p.get('dataset', '')}/{p['reference_split']}" if p["reference_split"] else "-"
        digest = p["weights_hash"] if p["weights_hash"] == PER_CELL else f"`{p['weights_hash'][:16]}`"
        lines.append(
            f"| {metric} | {_protocol_label(p)} | {p['n_generated']} | {p['n_reference']} | {split} | {p['extractor']} "
            f"| {digest} | {p['seed']} |"
        )
    # Where a metric's protocol differs between cells (a calibration row under another protocol), each cell says its own.
    per_cell = [m for m, p in protocols.items() if PER_CELL in (p.get("name"), p.get("published"), p.get("dataset"))]
    published = [m for m in s["metrics"] if any(m in c.get("published", {}) for c in state["cells"])]
    train = sum(c.get("train_seconds") or 0 for c in state["cells"])
    evaluate = sum(c.get("eval_seconds", 0) for c in state["cells"])
    head = [
        *axes,
        *(k for _, k in columns),
        *(f"{m} published" for m in published),
        *(f"{m} protocol" for m in per_cell),
        "train s",
        "eval s",
        "status",
    ]
    lines += [
        "",
        f"Time: {train:.0f} s training, {evaluate:.0f} s evaluating ({(train + evaluate) / 60:.1f} min over "
        f"{len(state['cells'])} cells).",
        "",
        "## Results",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * len(head)) + " |",
    ]
    for cell in state["cells"]:
        results = cell.get("results", {})
        values = [results.get(m, {}).get("values", {}).get(k) for m, k in columns]
        status = "ok" if cell["status"] == "ok" else f"{cell['status']}: {cell.get('error', '')}".replace("|", "/")
        lines.append(
            "| "
            + " | ".join(
                [
                    *(str(cell["params"][a]) for a in axes),
                    *("-" if v is None else f"{v:.4g}" for v in values),
                    *(cell.get("published", {}).get(m, "-") for m in published),
                    *(_protocol_label(results[m]["protocol"]) if m in results else "-" for m in per_cell),
                    str(cell.get("train_seconds", "-")),
                    str(cell.get("eval_seconds", "-")),
                    status,
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _protocol_label(p: dict[str, Any]) -> str:
    """A protocol's name and whether it is published ("lucic2018 (published: Lucic et al. 2018, compare_gan)") or ours."""
    name = p.get("name", "dalle-kit")
    if PER_CELL in (name, p.get("published")):
        return PER_CELL
    return f"{name} ({'published: ' + p['published'] if p.get('published') else 'ours'})"


def csv_text(state: dict[str, Any]) -> str:
    """Long format: one row per score, each with its protocol; a failed cell gives one row with its error."""
    axes = list(state["axes"])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            *axes,
            "metric",
            "value_name",
            "value",
            "published",
            "protocol",
            "n_generated",
            "n_reference",
            "dataset",
            "reference_split",
            "extractor",
            "weights_hash",
            "seed",
            "status",
            "error",
        ]
    )
    for cell in state["cells"]:
        params = [cell["params"][a] for a in axes]
        if cell["status"] != "ok":
            writer.writerow(
                [*params, "", "", "", "", "", "", "", "", "", "", "", "", cell["status"], cell.get("error", "")]
            )
            continue
        for metric, result in cell["results"].items():
            p = result["protocol"]
            for i, (key, value) in enumerate(result["values"].items()):
                published = cell.get("published", {}).get(metric, "") if i == 0 else ""
                writer.writerow(
                    [
                        *params,
                        metric,
                        key,
                        repr(value),
                        published,
                        _protocol_label(p),
                        p["n_generated"],
                        p["n_reference"],
                        p.get("dataset", ""),
                        p["reference_split"] or "",
                        p["extractor"],
                        p["weights_hash"],
                        p["seed"],
                        "ok",
                        "",
                    ]
                )
    return buf.getvalue()


def chart(state: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(m, next(iter(vals))) for m, vals in _first_values(state).items()]
    labels = ["\n".join(str(v) for v in c["params"].values()) for c in state["cells"]]
    fig, axes = plt.subplots(1, max(len(columns), 1), figsize=(3.6 * max(len(columns), 1), 3.8), dpi=110, squeeze=False)
    for ax, (metric, key) in zip(axes[0], columns):
        heights = [c.get("results", {}).get(metric, {}).get("values", {}).get(key) for c in state["cells"]]
        xs = range(len(heights))
        ax.bar(
            xs,
            [h if h is not None else 0 for h in heights],
            color=["C0" if h is not None else "lightgrey" for h in heights],
        )
        for x, h in zip(xs, heights):
            ax.text(
                x,
                h if h is not None else 0,
                "failed" if h is None else f"{h:.3g}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_xlabel(" / ".join(state["axes"]), fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{state['name']}: seed {state['settings']['seed']}, {state['settings']['num_samples']} generated images per metric "
        f"(protocol in {state['name']}.md)",
        fontsize=9,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _first_values(state: dict[str, Any]) -> dict[str, list[str]]:
    """metric -> its value names, headline first (as the metric reports them)."""
    out: dict[str, list[str]] = {}
    for metric, key in _value_columns(state):
        out.setdefault(metric, []).append(key)
    return out


def write_reports(state: dict[str, Any], stem: Path) -> list[Path]:
    paths = []
    for suffix, text in ((".md", markdown(state)), (".csv", csv_text(state))):
        paths.append(atomic_write_text(stem.with_name(stem.name + suffix), text))
    json_path = stem.with_name(stem.name + ".json")  # written (merged) by `_save_state` just before
    paths += [json_path, chart(state, stem.with_name(stem.name + ".png"))]
    from .compare import write_bench_page  # the cells side by side, as `dalle-kit compare` shows runs

    paths.append(write_bench_page(state, stem.with_name(stem.name + ".html")))
    return paths
