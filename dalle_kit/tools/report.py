"""A run's report: ``report.html`` in the run directory, one self-contained page (mail it as it is).

It shows the run's name, its metrics with their full protocols, loss curves (inline SVG, one chart per logged
series), the sample grid of every interval (a slider, and a strip readable without JavaScript), the resolved
recipe and which distribution and version gave each part. It is made from the run directory's files alone
(`RunFiles`), so any run can be reported, even one whose plugins are no longer installed. The built-in plugin
``html-report`` writes it at the end of training and after every evaluation; ``dalle-kit report RUN`` on demand.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import hints
from . import pages
from ..checkpoint import atomic_write_text, list_checkpoints
from ..errors import RecipeError, UserError
from .pages import esc
from ..rundir import read_jsonl
from ..recipe import RECIPE_FILE
from ..registry import get_registry
from ..rundir import METRICS_FILE, PARTS_FILE

REPORT_FILE = "report.html"
_GRID_NAME = re.compile(r"step-(\d+)\.png")
#: Fields of a metrics.jsonl row that are not logged values.
_NOT_VALUES = frozenset({"step", "kind", "time", "metric", "protocol", "details"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunFiles:
    """What a run directory holds, read from its files (recipe.toml, parts.json, metrics.jsonl, samples/,
    checkpoints/); nothing is built, so no plugin needs to be installed."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not (self.dir / RECIPE_FILE).is_file():
            raise UserError(
                f"{directory}: not a run directory (no {RECIPE_FILE}); name a directory made by `{hints.dalle_kit('run')}`"
            )
        self.recipe_text = (self.dir / RECIPE_FILE).read_text(encoding="utf-8", errors="replace")
        try:
            self.recipe: dict[str, Any] = tomllib.loads(self.recipe_text)
        except tomllib.TOMLDecodeError:
            self.recipe = {}
        try:
            self.parts: dict[str, dict[str, Any]] = json.loads((self.dir / PARTS_FILE).read_text())
        except (OSError, ValueError):
            self.parts = {}
        self.rows = read_jsonl(self.dir / METRICS_FILE)

    # ------------------------------------------------------------ what it is
    @property
    def name(self) -> str:
        return str(self.recipe.get("name") or self.dir.name)

    @property
    def pipeline(self) -> str:
        return str(self.recipe.get("pipeline", "?"))

    @property
    def dataset(self) -> str:
        return str(self.recipe.get("data", {}).get("name", "-"))

    @property
    def steps(self) -> int | None:
        """The recipe's ``[train] steps`` (the length the run is meant to reach)."""
        return self.recipe.get("train", {}).get("steps")

    @property
    def prompts(self) -> list[str]:
        return [str(p) for p in self.recipe.get("sample", {}).get("prompts", [])]

    # ------------------------------------------------------------ what it logged
    @property
    def train_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind", "train") == "train" and "step" in r]

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == "eval" and "metric" in r]

    @property
    def steps_trained(self) -> int:
        rows = self.train_rows
        return int(rows[-1]["step"]) if rows else 0

    @property
    def seconds_trained(self) -> float | None:
        rows = self.train_rows
        return rows[-1].get("time") if rows else None

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Every numeric value of the training rows (losses, learning rates, mean logits) against step."""
        out: dict[str, list[tuple[float, float]]] = {}
        for row in self.train_rows:
            for key, value in row.items():
                if key not in ("step", "time") and _number(value):
                    out.setdefault(key, []).append((row["step"], float(value)))
        return out

    def thread_changes(self) -> list[tuple[int, int]]:
        """(step, new count) of every change of CPU thread count (``[train] threads = "auto"`` on a shared
        machine), oldest first."""
        return [
            (int(r["step"]), int(r["threads"]))
            for r in self.rows
            if r.get("kind") == "threads" and _number(r.get("threads")) and "step" in r
        ]

    def latest_evals(self) -> dict[str, dict[str, Any]]:
        """metric -> its newest eval row (the last logged)."""
        return {row["metric"]: row for row in self.eval_rows}

    # ------------------------------------------------------------ what it saved
    def grids(self) -> list[tuple[int, Path]]:
        """(step, path) of every sample grid in samples/, oldest first."""
        found = []
        for path in (self.dir / "samples").glob("step-*.png"):
            match = _GRID_NAME.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def grid_images(self) -> list[tuple[int, bytes]]:
        """(step, PNG bytes) of every grid that reads as a PNG (a file cut short by a crash is left out), oldest first."""
        found = []
        for step, path in self.grids():
            try:
                data = path.read_bytes()
                pages.png_size(data)
            except (OSError, ValueError):
                continue
            found.append((step, data))
        return found

    def checkpoint_steps(self) -> list[int]:
        return [step for step, _ in list_checkpoints(self.dir / "checkpoints")]

    def progress_text(self) -> str:
        """``"1500 of 2000"``: the last logged step, and the steps the recipe asks for."""
        return f"{self.steps_trained}" + (f" of {self.steps}" if self.steps else "")

    def checkpoint_text(self) -> str:
        steps = self.checkpoint_steps()
        return f"step {steps[-1]}" if steps else "none yet"


def has_protocol(row: dict[str, Any]) -> bool:
    return isinstance(row.get("protocol"), dict)


def eval_values(row: dict[str, Any]) -> dict[str, float]:
    """The numbers an eval row of metrics.jsonl reports (``fid``, ``kid_mean``...), in logged order."""
    return {k: v for k, v in row.items() if k not in _NOT_VALUES and _number(v)}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = seconds / 60
    return f"{seconds:.0f} s" if seconds < 120 else f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


# ---------------------------------------------------------------------------------------------------- sections
def summary(files: RunFiles) -> str:
    facts = [
        ("pipeline", files.pipeline),
        ("dataset", files.dataset),
        ("seed", files.recipe.get("seed", "-")),
        ("steps trained", files.progress_text()),
        ("training time", duration(files.seconds_trained)),
        ("newest checkpoint", files.checkpoint_text()),
    ]
    if changes := files.thread_changes():  # they explain a slower stretch, and why the run is not bit-reproducible
        facts.append(("CPU threads", ", ".join(f"{count} from step {step}" for step, count in changes)))
    return '<p class="meta">' + " &middot; ".join(f"{esc(k)}: <b>{esc(v)}</b>" for k, v in facts) + "</p>"


def draws_images(files: RunFiles) -> bool:
    """Whether the run's pipeline draws images (true when its plugin is not installed here: the report cannot tell)."""
    try:
        return get_registry().get("pipeline", files.pipeline).cls.draws_images
    except RecipeError:
        return True


def metrics_section(files: RunFiles) -> str:
    rows = files.eval_rows
    if not rows and not draws_images(files):
        return pages.empty(f"No scores: {hints.draws_nothing(files.pipeline)}")  # no full stop after a command
    if not rows:
        return pages.empty(
            f"No evaluations yet: `{hints.eval_command(files.dir, get_registry().suggested_metrics(files.dataset))}` "
            "scores the newest "
            f"checkpoint with metrics that suit {files.dataset} (or list metrics in the recipe's [eval] "
            "table)."
        )
    protocols = pages.Protocols()
    table_rows = []
    for row in rows:
        values = "<br>".join(f"{esc(k)} = <b>{esc(pages.fmt(v))}</b>" for k, v in eval_values(row).items())
        more = pages.json_details("details", row["details"]) if row.get("details") else ""
        protocol = protocols.id(row["protocol"], row["metric"]) if has_protocol(row) else "none recorded"
        table_rows.append([esc(row.get("step", "-")), esc(row["metric"]), values, esc(protocol), more])
    return (
        f'<p class="note">Every score of {esc(files.dir.name)}, oldest first; its protocol (P-number) is listed in full '
        "below it. Scores compare only under the same protocol.</p>\n"
        + pages.table(["step", "metric", "values", "protocol", "details"], table_rows, raw=True)
        + "\n<h3>Protocols</h3>\n"
        + protocols.html()
    )


def curves_section(
    series: dict[str, list[tuple[str, list[tuple[float, float]]]]], labels: list[str] | None = None
) -> str:
    """One chart per logged value: `series` maps its name to (label, points) lines (one per run in a comparison)."""
    if not series:
        return pages.empty("No training rows logged yet.")
    charts = "\n".join(pages.line_chart(name, lines) for name, lines in series.items())
    return (pages.legend(labels) if labels else "") + f'<div class="charts">\n{charts}\n</div>'


def samples_section(files: RunFiles) -> str:
    grids = files.grid_images()
    if not grids:
        if not draws_images(files):
            return pages.empty(f"No sample grids: pipeline '{files.pipeline}' draws no images.")
        return pages.empty("No sample grids yet: they are drawn every [sample] every steps and at the last step.")
    return pages.grid_viewer([(f"step {step}", data) for step, data in grids])


def recipe_section(files: RunFiles) -> str:
    return (
        f'<p class="note">{esc(RECIPE_FILE)}: the recipe as the run resolved it, every default filled in.</p>\n'
        f'<pre class="recipe">{esc(files.recipe_text)}</pre>'
    )


def parts_section(files: RunFiles) -> str:
    if not files.parts:
        return pages.empty(f"No {PARTS_FILE} in this run directory.")
    rows = [
        [
            section,
            p.get("kind", "-"),
            p.get("name", "-"),
            p.get("plugin", "-"),
            p.get("distribution", "-"),
            p.get("version", "-"),
        ]
        for section, p in files.parts.items()
    ]
    return pages.table(["section", "kind", "name", "plugin", "distribution", "version"], rows)


def render_report(directory: str | Path) -> str:
    files = RunFiles(directory)
    series = {name: [(name, points)] for name, points in files.series().items()}
    sections = [
        ("metrics", "Metrics", metrics_section(files)),
        ("curves", "Training curves", curves_section(series)),
        ("samples", "Sample grids", samples_section(files)),
        ("recipe", "Recipe", recipe_section(files)),
        ("parts", "Parts", parts_section(files)),
    ]
    head = (
        f"<h1>{esc(files.name)}<small>{esc(files.dir.name)}</small></h1>\n{summary(files)}\n"
        f'<p class="meta">Report of {esc(files.dir.resolve())}, written {esc(datetime.now().strftime("%Y-%m-%d %H:%M"))} '
        "by dalle-kit.</p>"
    )
    return pages.sectioned_page(f"{files.name}: dalle-kit run report", head, sections)


def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report (default ``<run>/report.html``, replaced atomically); returns its path."""
    text = render_report(directory)
    return atomic_write_text(Path(out) if out is not None else Path(directory) / REPORT_FILE, text)
