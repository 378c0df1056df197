"""Loss curves from a run's metrics.jsonl."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import atomic_write_bytes  # noqa: E402


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a metrics file, one a line; lines that are not an object (cut short by a crash, damaged,
    a file that is not ours) are skipped."""
    path = Path(path)
    if not path.is_file():  # absent (or a FIFO, which would block the read)
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if isinstance(row, dict):  # a stray number or list in a damaged file is no row
                rows.append(row)
    return rows


def plot_losses(metrics_path: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Plot every `loss*` series of the training rows (kind == "train") against step."""
    rows = [r for r in read_jsonl(metrics_path) if r.get("kind", "train") == "train"]
    if not rows:
        return None
    keys = sorted({k for r in rows for k in r if "loss" in k and isinstance(r[k], (int, float))})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "training losses")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buffer.getvalue())
