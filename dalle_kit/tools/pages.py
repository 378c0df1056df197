"""Building blocks of dalle-kit's self-contained HTML pages (a run's report, a comparison of runs).

Everything a page shows is inside the file: images as base64 ``data:`` URIs, charts as inline SVG, a few lines
of inline JavaScript (a slider; none is needed to read the page). Every piece of text goes through `esc`. A page
marks on its ``<body>`` how many of its images loaded (``data-images-loaded="7/7"``), which
``tests/render_pages.py`` reads back from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

#: Line colours of the charts: one per run (comparison) or per series.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
#: Points per chart line at most (longer series are thinned evenly, the last point kept).
MAX_POINTS = 600
#: Images narrower than this are shown enlarged (pixelated) to a readable size.
READABLE_WIDTH = 320

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d232a;
       margin: 0; background: #f4f5f7; }
main { max-width: 1280px; margin: 0 auto; padding: 18px 28px 40px; }
h1 { font-size: 24px; margin: 6px 0 2px; }
h1 small { font-size: 15px; font-weight: normal; color: #5b6570; margin-left: 8px; }
h2 { font-size: 17px; margin: 26px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #d5d9de; }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.meta, p.note { color: #4a545e; margin: 4px 0 8px; }
p.empty { color: #6b7580; font-style: italic; background: #fff; border: 1px dashed #c4cad0; padding: 10px 14px; }
nav { font-size: 13px; margin: 6px 0 4px; }
nav a { margin-right: 14px; color: #2b5d9b; text-decoration: none; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 4px 18px 14px; margin: 16px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; background: #fff; }
th, td { border: 1px solid #d9dde2; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.missing { color: #9aa3ab; text-align: center; }
th.other-protocol, td.other-protocol { background: #fff4e0 !important; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
span.hash { display: inline-block; width: 33ch; word-break: break-all; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
pre.recipe { columns: 3 300px; column-gap: 28px; background: #f8f9fa; border: 1px solid #e1e4e8; padding: 10px 14px;
             margin: 6px 0; white-space: pre; overflow-x: auto; }
details > summary { cursor: pointer; color: #2b5d9b; }
details pre { max-height: 320px; overflow: auto; background: #f8f9fa; padding: 6px 8px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
.charts svg { background: #fff; border: 1px solid #e1e4e8; border-radius: 4px; }
.legend { font-size: 13px; margin: 4px 0 8px; }
.legend span.swatch { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin: 0 5px 0 12px; }
img.grid { image-rendering: pixelated; border: 1px solid #d9dde2; background: #fff; max-width: 100%; height: auto; }
.viewer { margin: 6px 0 12px; }
.viewer .controls { display: flex; align-items: center; gap: 12px; margin-bottom: 6px; }
.viewer input[type=range] { width: min(600px, 70%); }
.viewer output { font-weight: 600; min-width: 9em; }
.strip { display: flex; gap: 12px; overflow-x: auto; padding-bottom: 8px; }
.strip figure { margin: 0; flex: none; }
.strip img.grid { height: 240px; width: auto; max-width: none; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #4a545e; margin-top: 2px; }
.side { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.side figure { flex: none; }
.wide { overflow-x: auto; }
"""

#: Marks the body with the count of images that decoded (``data-images-loaded="loaded/total"``), on load.
IMAGES_SCRIPT = """
addEventListener("load", function () {
  var all = Array.prototype.slice.call(document.images);
  var ok = all.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + all.length);
});
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: `title` (text) and `body` (HTML)."""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
        f'<style>{CSS}</style>\n</head>\n<body data-images-loaded="">\n<main>\n{body}\n</main>\n'
        f"<script>{IMAGES_SCRIPT}</script>\n</body>\n</html>\n"
    )


def section(anchor: str, heading: str, content: str) -> str:
    return f'<section id="{esc(anchor)}">\n<h2>{esc(heading)}</h2>\n{content}\n</section>'


def sectioned_page(title: str, head: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A page of `head` (HTML), a menu of the sections and the sections, each (anchor, heading, content HTML)."""
    nav = (
        "<nav>" + "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _ in sections) + "</nav>"
    )
    return page(title, f"{head}\n{nav}\n" + "\n".join(section(*s) for s in sections))


def empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def fmt(value: Any) -> str:
    """A number as a table shows it (4 significant digits); anything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False) -> str:
    """An HTML table; numbers are right-aligned. `raw`: cells are HTML already (headers are always text)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{esc(fmt(cell))}</td>')
            else:
                cells.append(f"<td>{cell if raw else esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def details(summary: str, text: str) -> str:
    """A collapsed block of preformatted text."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def json_details(summary: str, value: Any) -> str:
    return details(summary, json.dumps(value, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------------------------------- images
def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header; ValueError if `data` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", data[16:24])


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image(data: bytes, alt: str, *, css: str = "grid", attrs: str = "") -> str:
    """An ``<img>`` holding the PNG `data`; a small image is given a larger width (shown pixelated by the CSS)."""
    width, height = png_size(data)
    scale = max(1, math.ceil(READABLE_WIDTH / width)) if width < READABLE_WIDTH else 1
    scale = min(scale, 4)
    return (
        f'<img class="{css}" src="{data_uri(data)}" alt="{esc(alt)}" width="{width * scale}" '
        f'height="{height * scale}"{attrs}>'
    )


def grid_viewer(grids: Sequence[tuple[str, bytes]]) -> str:
    """Sample grids over time: the newest shown large with a slider to step through them (inline JS), and every grid
    in a strip below, readable without JavaScript. `grids` are (caption, PNG bytes), oldest first."""
    caption, newest = grids[-1]
    strip = "\n".join(
        f"<figure>{image(data, text, attrs=_caption_attribute(text))}<figcaption>{esc(text)}</figcaption></figure>"
        for text, data in grids
    )
    last = len(grids) - 1
    return f"""<div class="viewer">
<div class="controls"><input type="range" id="grid-slider" min="0" max="{last}" value="{last}" step="1" hidden
 aria-label="sample grid"><output id="grid-label">{esc(caption)}</output></div>
{image(newest, caption, attrs=' id="grid-view"')}
</div>
<h3>Every grid ({len(grids)}), oldest first</h3>
<div class="strip" id="grid-strip">
{strip}
</div>
<script>
(function () {{
  var slider = document.getElementById("grid-slider"), view = document.getElementById("grid-view");
  var label = document.getElementById("grid-label");
  var grids = document.querySelectorAll("#grid-strip img");
  slider.hidden = false;
  slider.addEventListener("input", function () {{
    var im = grids[+slider.value];
    view.src = im.src;
    view.alt = im.alt;
    label.textContent = im.getAttribute("data-caption");
  }});
}})();
</script>"""


def _caption_attribute(text: str) -> str:
    return f' data-caption="{esc(text)}"'


# ---------------------------------------------------------------------------------------------------- charts
def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) from `lo` to `hi`, about `count` of them."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def line_chart(
    title: str, lines: Sequence[tuple[str, list[tuple[float, float]]]], *, width: int = 280, height: int = 180
) -> str:
    """An inline SVG chart of (label, [(x, y), ...]) lines against step, coloured in `COLORS` order; lines with
    fewer than one finite point are skipped."""
    lines = [(label, [(x, y) for x, y in pts if math.isfinite(y)]) for label, pts in lines]
    drawn = [(i, label, _thin(pts)) for i, (label, pts) in enumerate(lines) if pts]
    left, right, top, bottom = 52, 14, 24, 30
    xs = [x for _, _, pts in drawn for x, _ in pts]
    ys = [y for _, _, pts in drawn for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(title)}" font-family="sans-serif" font-size="10">',
        f'<text x="{left}" y="15" font-size="12" font-weight="600" fill="#1d232a">{esc(title)}</text>',
    ]
    for y in ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e4e7eb"/>')
        parts.append(
            f'<text x="{left - 4}" y="{py(y) + 3:.1f}" text-anchor="end" fill="#5b6570">{esc(f"{y:.4g}")}</text>'
        )
    for x in ticks(x0, x1):
        parts.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f2f4"/>')
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - 12}" text-anchor="middle" fill="#5b6570">{esc(f"{x:.6g}")}</text>'
        )
    parts.append(f'<text x="{left + pw}" y="{height - 1}" text-anchor="end" fill="#8a939c">step</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#c4cad0"/>')
    for i, label, pts in drawn:
        color = COLORS[i % len(COLORS)]
        if len(pts) == 1:
            ((x, y),) = pts
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"><title>{esc(label)}</title></circle>'
            )
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{coords}">'
            f"<title>{esc(label)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(labels: Sequence[str]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>{esc(label)}'
            for i, label in enumerate(labels)
        )
        + "</div>"
    )


# ---------------------------------------------------------------------------------------------------- protocols
#: The fields of a metric's protocol (`dalle_kit.evaluation.Protocol`), as table headings.
PROTOCOL_FIELDS = (
    ("n_generated", "n generated"),
    ("n_reference", "n reference"),
    ("dataset", "dataset"),
    ("reference_split", "reference split"),
    ("extractor", "extractor"),
    ("weights_hash", "weights sha256"),
    ("seed", "seed"),
)


class Protocols:
    """Numbers the distinct protocols met on a page (P1, P2, ...) so that tables can name them briefly and list each
    one in full once."""

    def __init__(self):
        self.seen: list[dict[str, Any]] = []
        self.metrics: list[list[str]] = []

    def id(self, protocol: dict[str, Any], metric: str) -> str:
        if protocol not in self.seen:
            self.seen.append(protocol)
            self.metrics.append([])
        n = self.seen.index(protocol)
        if metric not in self.metrics[n]:
            self.metrics[n].append(metric)
        return f"P{n + 1}"

    def rows(self) -> list[list[Any]]:
        """One row per protocol: id, metrics, then every field (text)."""
        return [
            [f"P{n + 1}", ", ".join(self.metrics[n]), *(_protocol_text(p, key) for key, _ in PROTOCOL_FIELDS)]
            for n, p in enumerate(self.seen)
        ]

    def headers(self) -> list[str]:
        return ["protocol", "metrics", *(title for _, title in PROTOCOL_FIELDS)]

    def html(self) -> str:
        """The protocols' table (empty when there are none)."""
        if not self.seen:
            return ""
        hash_column = 2 + [key for key, _ in PROTOCOL_FIELDS].index("weights_hash")
        rows = [
            [f'<span class="hash">{esc(cell)}</span>' if i == hash_column else esc(cell) for i, cell in enumerate(row)]
            for row in self.rows()
        ]
        return table(self.headers(), rows, raw=True)


def _protocol_text(protocol: dict[str, Any], key: str) -> str:
    value = protocol.get(key)
    if value is None or value == "":
        return "-"
    return str(value)
