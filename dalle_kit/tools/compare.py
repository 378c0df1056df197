"""Runs side by side: ``dalle-kit compare RUN RUN ...`` writes ``compare.html`` and ``compare.md``; ``dalle-kit bench``
writes the same page for its grid (``<out>/<name>.html``).

A comparison shows the runs' recipes diffed (the dotted keys whose values differ, and how many agree), each run's
newest score of every metric side by side, sample grids and the training curves of all runs in one chart per value.
A metrics column holds scores of **one** protocol only: a run whose score was made under another protocol (other
image counts, reference split, extractor, weights or seed) gets a column of its own, marked, so that numbers that
cannot be compared never stand in one column. Runs of different pipelines and datasets compare too; a run that
cannot draw (no checkpoint, a plugin missing) has no grid and says why.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .. import hints
from . import pages
from ..errors import UserError, one_line
from .pages import esc
from ..recipe import flatten_keys
from .report import RunFiles, curves_section, eval_values, has_protocol

#: Prompts drawn per run when none are given: the first of the run's own ``[sample] prompts``.
DEFAULT_PROMPTS = 4
_ABSENT = "(absent)"


@attrs.define
class Entry:
    """One run of a comparison: its label, its files (None for a bench cell that made no run directory), a note
    (a failed cell's error) and its sample grid (PNG bytes) with what it shows or why there is none."""

    label: str
    files: RunFiles | None
    note: str = ""
    grid: bytes | None = None
    grid_note: str = ""


@attrs.frozen
class Column:
    metric: str
    value: str
    protocol: str  # "P1", "P2"...
    other: bool  # a second (third...) protocol for this (metric, value): its own column, marked


@attrs.define
class MetricTable:
    """Each run's newest score of every (metric, value name), one column per protocol met."""

    columns: list[Column]
    cells: dict[tuple[int, int], tuple[float, int]]  # (entry index, column index) -> (value, step)
    protocols: pages.Protocols


def metric_table(entries: Sequence[Entry]) -> MetricTable:
    protocols = pages.Protocols()
    latest = [entry.files.latest_evals() if entry.files else {} for entry in entries]
    keys = list(
        dict.fromkeys(
            (metric, value) for evals in latest for metric, row in evals.items() for value in eval_values(row)
        )
    )
    columns: list[Column] = []
    cells: dict[tuple[int, int], tuple[float, int]] = {}
    for metric, value in keys:
        by_protocol: dict[str, int] = {}
        for i, evals in enumerate(latest):
            row = evals.get(metric)
            if (
                row is None or value not in eval_values(row) or not has_protocol(row)
            ):  # no protocol: nothing to compare with
                continue
            pid = protocols.id(row["protocol"], metric)
            if pid not in by_protocol:
                by_protocol[pid] = len(columns)
                columns.append(Column(metric, value, pid, other=len(by_protocol) > 1))
            cells[(i, by_protocol[pid])] = (eval_values(row)[value], row.get("step", 0))
    return MetricTable(columns, cells, protocols)


def recipe_diff(entries: Sequence[Entry]) -> tuple[list[str], list[list[str]], list[str]]:
    """(labels, rows of [key, value per run] for the keys whose values differ, keys that agree) over the runs that have
    a recipe; a key a run lacks reads ``(absent)``."""
    flat = [(e.label, flatten_keys(e.files.recipe)) for e in entries if e.files is not None]
    keys = list(dict.fromkeys(k for _, f in flat for k in f))
    differ: list[list[str]] = []
    same: list[str] = []
    for key in keys:
        values = [_value_text(f[key]) if key in f else _ABSENT for _, f in flat]
        if len(set(values)) > 1:
            differ.append([key, *values])
        else:
            same.append(key)
    return [label for label, _ in flat], differ, same


def _value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------- grids
def draw_fresh_grids(entries: Sequence[Entry], prompts: Sequence[str] = (), *, seed: int = 0, n: int = 4) -> None:
    """Give each entry a grid drawn now from its newest checkpoint (`dalle_kit.tools.sample.sample`): `prompts`, else its own
    first `DEFAULT_PROMPTS` ``[sample] prompts``; `n` images per prompt, noise from `seed`."""
    from .sample import sample

    with tempfile.TemporaryDirectory(prefix="dalle-kit-compare-") as tmp:
        for i, entry in enumerate(entries):
            if entry.files is None:
                continue
            use = list(prompts) or entry.files.prompts[:DEFAULT_PROMPTS]
            if not use:
                entry.grid_note = "no grid: its recipe has no [sample] prompts; give --prompt"
                continue
            try:
                path = sample(entry.files.dir, use, n=n, out=Path(tmp) / f"{i}.png", seed=seed)
            except Exception as exc:  # a run that cannot draw still compares by recipe and metrics
                entry.grid_note = f"no grid: {one_line(exc)}"
                continue
            entry.grid = path.read_bytes()
            entry.grid_note = (
                f"drawn now from its newest checkpoint ({entry.files.checkpoint_text()}), seed {seed}, {n} per prompt"
            )


def use_last_grids(entries: Sequence[Entry]) -> None:
    """Give each entry the last grid its training saved in samples/ (no drawing)."""
    for entry in entries:
        grids = entry.files.grid_images() if entry.files is not None else []
        if grids:
            step, entry.grid = grids[-1]
            entry.grid_note = f"the grid its training saved at step {step}"
        elif entry.files is not None:
            entry.grid_note = "no grid: its samples/ folder holds none (the run stopped before drawing one)"


# ---------------------------------------------------------------------------------------------------- pages
METRICS_NOTE = (
    "Each run's newest score of every metric, its step below it. A column holds scores made under one "
    "protocol only (its P-number; the protocols are listed in full below): a run whose score used another "
    "protocol (other image counts, reference split, extractor, weights or seed) has it in a column of its own, "
    "marked \u26a0 and shaded, never in the same column."
)


def _names(column: Column) -> list[str]:
    """The column's metric and value names (one name when they are the same, as ``fid`` / ``fid``)."""
    return [column.metric] if column.value == column.metric.replace("-", "_") else [column.metric, column.value]


def _column_title(column: Column) -> str:
    return f"{' / '.join(_names(column))} \u00b7 {column.protocol}" + (" \u26a0 other protocol" if column.other else "")


def _run_rows(entries: Sequence[Entry]) -> list[list[str]]:
    rows = []
    for entry in entries:
        f = entry.files
        if f is None:
            rows.append([entry.label, "-", "-", "-", "-", "-", entry.note or "no run directory"])
            continue
        rows.append(
            [
                entry.label,
                f.name,
                f.pipeline,
                f.dataset,
                f.progress_text(),
                f.checkpoint_text(),
                entry.note or str(f.dir),
            ]
        )
    return rows


RUN_HEADERS = ["run", "recipe name", "pipeline", "dataset", "steps trained", "newest checkpoint", "directory / note"]


def render_html(entries: Sequence[Entry], title: str, intro: str = "") -> str:
    labels = [e.label for e in entries]
    table = metric_table(entries)
    if table.columns:
        head = "".join(
            f'<th class="{"other-protocol" if c.other else ""}">{"<br>".join(esc(n) for n in _names(c))}<br>'
            f"<small>{esc(c.protocol)}{' &#9888;' if c.other else ''}</small></th>"
            for c in table.columns
        )
        body = []
        for i, entry in enumerate(entries):
            cells = []
            for j, column in enumerate(table.columns):
                shade = " other-protocol" if column.other else ""
                if (i, j) in table.cells:
                    value, step = table.cells[(i, j)]
                    cells.append(
                        f'<td class="num{shade}"><b>{esc(pages.fmt(value))}</b><br><small>step {esc(step)}</small></td>'
                    )
                else:
                    cells.append(f'<td class="missing{shade}">&mdash;</td>')
            body.append(f"<tr><td>{esc(entry.label)}</td>{''.join(cells)}</tr>")
        metrics = (
            f'<p class="note">{esc(METRICS_NOTE)}</p>\n<div class="wide"><table>\n<thead><tr><th>run</th>{head}</tr></thead>\n'
            "<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table></div>\n<h3>Protocols</h3>\n" + table.protocols.html()
        )
    else:
        first = next((e.files.dir for e in entries if e.files is not None), None)
        example = hints.dalle_kit(f"eval {hints.quote(str(first))}") if first is not None else "dalle-kit eval"
        metrics = pages.empty(
            f"None of these runs has been evaluated yet: `{example}` scores the first "
            "(add --metric kid, for example, when its recipe lists no [eval] metrics)."
        )

    figures = []
    for entry in entries:
        picture = (
            pages.image(entry.grid, entry.label)
            if entry.grid is not None
            else pages.empty(entry.grid_note or "no grid: no run directory")
        )
        caption = f"<b>{esc(entry.label)}</b>" + (f"<br>{esc(entry.grid_note)}" if entry.grid is not None else "")
        figures.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    samples = '<div class="side">\n' + "\n".join(figures) + "\n</div>"

    diff_labels, differ, same = recipe_diff(entries)
    if differ:
        rows = [[f"<code>{esc(row[0])}</code>", *(f"<code>{esc(v)}</code>" for v in row[1:])] for row in differ]
        recipes = pages.table(["key", *(esc(label) for label in diff_labels)], rows, raw=True)
    else:
        recipes = pages.empty("The recipes are the same in every key.")
    recipes += (
        f'\n<p class="note">{len(differ)} keys differ; {len(same)} keys have the same value in every run.</p>\n'
        + pages.details(f"the {len(same)} shared keys", "\n".join(same))
    )

    series: dict[str, list] = {}
    for i, entry in enumerate(entries):
        for name, points in (entry.files.series() if entry.files else {}).items():
            series.setdefault(name, [(label, []) for label in labels])[i] = (entry.label, points)
    sections = [
        ("runs", "Runs", pages.table(RUN_HEADERS, _run_rows(entries))),
        ("metrics", "Metrics", metrics),
        ("samples", "Samples", samples),
        ("recipes", "Recipe differences", recipes),
        ("curves", "Training curves", curves_section(series, labels)),
    ]
    head = f"<h1>{esc(title)}</h1>" + (f'\n<p class="meta">{esc(intro)}</p>' if intro else "")
    return pages.sectioned_page(title, head, sections)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [
        "| " + " | ".join(_md(h) for h in headers) + " |",
        "|" + " --- |" * len(headers),
        *("| " + " | ".join(_md(c) for c in row) + " |" for row in rows),
        "",
    ]


def render_markdown(entries: Sequence[Entry], title: str, intro: str = "") -> str:
    lines = (
        [f"# {title}", ""]
        + ([intro, ""] if intro else [])
        + ["## Runs", ""]
        + _md_table(RUN_HEADERS, _run_rows(entries))
    )
    table = metric_table(entries)
    lines += ["## Metrics", ""]
    if table.columns:
        rows = []
        for i, entry in enumerate(entries):
            cells = [
                f"{pages.fmt(table.cells[(i, j)][0])} (step {table.cells[(i, j)][1]})" if (i, j) in table.cells else "-"
                for j in range(len(table.columns))
            ]
            rows.append([entry.label, *cells])
        lines += [METRICS_NOTE, ""] + _md_table(["run", *(_column_title(c) for c in table.columns)], rows)
        lines += ["### Protocols", ""] + _md_table(table.protocols.headers(), table.protocols.rows())
    else:
        lines += ["None of these runs has been evaluated yet.", ""]
    labels, differ, same = recipe_diff(entries)
    lines += ["## Recipe differences", ""]
    lines += (
        _md_table(["key", *labels], [[f"`{r[0]}`", *(f"`{v}`" for v in r[1:])] for r in differ])
        if differ
        else ["The recipes are the same in every key.", ""]
    )
    lines += [
        f"{len(differ)} keys differ; {len(same)} keys have the same value in every run.",
        "",
        "Sample grids and training curves: see the HTML page beside this file.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- writing
def entries_for(run_dirs: Sequence[str | Path]) -> list[Entry]:
    from ..run import resolve_run_dir

    found = [RunFiles(resolve_run_dir(d)) for d in run_dirs]
    names = [f.dir.name for f in found]
    return [Entry(f.dir.name if names.count(f.dir.name) == 1 else str(f.dir), f) for f in found]


def write_comparison(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path = "compare",
    *,
    prompts: Sequence[str] = (),
    seed: int = 0,
    n: int = 4,
    grids: bool = True,
) -> tuple[Path, Path]:
    """Compare the runs into ``out_dir/compare.html`` and ``compare.md``; returns their paths. `grids`: draw each run's
    grid now (`draw_fresh_grids`)."""
    from ..checkpoint import atomic_write_text

    if len(run_dirs) < 2:
        one = f"; `{hints.dalle_kit('report ' + hints.quote(str(run_dirs[0])))}` shows one run" if run_dirs else ""
        raise UserError(f"compare: give at least two runs (got {len(run_dirs)}){one}")
    from ..files import check_target

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: is a file; name a folder for compare.html and compare.md")
    for name in ("compare.html", "compare.md"):  # refused before any grid is drawn, not after
        check_target(out / name)
    if grids:
        from .sample import SAMPLE_PROMPT, check_sample_request

        runs = " ".join(hints.quote(str(d)) for d in run_dirs)
        example = hints.dalle_kit(f"compare {runs} --prompt {SAMPLE_PROMPT}")
        check_sample_request(list(prompts) or ["a run's own prompt"] * DEFAULT_PROMPTS, n, example)
    entries = entries_for(run_dirs)
    if grids:
        draw_fresh_grids(entries, prompts, seed=seed, n=n)
    else:
        for entry in entries:
            entry.grid_note = "no grid: not drawn (--no-grids)"
    shown = (
        f"the prompts {', '.join(repr(p) for p in prompts)}"
        if prompts
        else f"each run's first {DEFAULT_PROMPTS} [sample] prompts"
    )
    if not prompts and len({tuple(e.files.prompts[:DEFAULT_PROMPTS]) for e in entries if e.files is not None}) > 1:
        shown += " (they differ between these runs; --prompt draws the same ones from every run)"
    intro = (
        f"{len(entries)} runs. Sample grids: {shown}, {n} per prompt, seed {seed}."
        if grids
        else f"{len(entries)} runs."
    )
    title = "Comparison: " + " vs ".join(e.label for e in entries)
    return (
        atomic_write_text(out / "compare.html", render_html(entries, title, intro)),
        atomic_write_text(out / "compare.md", render_markdown(entries, title, intro)),
    )


def write_bench_page(state: dict[str, Any], path: Path) -> Path:
    """The comparison page of a bench grid: one entry per cell (its parameters as the label), each with the last grid
    its training saved (a bench draws no new ones)."""
    from ..checkpoint import atomic_write_text

    entries = []
    for cell in state["cells"]:
        label = ", ".join(f"{k}={v}" for k, v in cell["params"].items())
        run_dir = cell.get("run_dir")
        files = RunFiles(run_dir) if run_dir and (Path(run_dir) / "recipe.toml").is_file() else None
        note = "" if cell["status"] == "ok" else f"{cell['status']}: {cell.get('error', '')}"
        entries.append(Entry(label, files, note=note))
    use_last_grids(entries)
    s = state["settings"]
    intro = (
        f"Bench grid {state['name']}: {len(entries)} cells from base recipe {s['base']}, seed {s['seed']}, "
        f"{s['num_samples']} generated images per metric. Grids: the last one each cell's training saved."
    )
    return atomic_write_text(path, render_html(entries, f"{state['name']}: bench cells side by side", intro))
