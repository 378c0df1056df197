"""Built-in training plugin `loss-curve`: ``loss_curve.png`` in the run directory, every ``loss*`` series of the
training rows of ``metrics.jsonl`` against step, drawn with matplotlib when training ends (finished or stopped)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import dalle_kit  # noqa: E402
from dalle_kit.files import atomic_write_bytes  # noqa: E402


def plot_losses(rows: list[dict[str, Any]], out: str | Path, title: str = "") -> Path | None:
    """Plot every `loss*` series of the training rows (kind == "train") of a run's metrics against step."""
    rows = [r for r in rows if r.get("kind", "train") == "train"]
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


@dalle_kit.hookimpl  # before html-report (trylast), which shows the curve
def train_end(trainer, step: int, finished: bool) -> None:
    run = trainer.run
    if run.files.writes:  # rank 0 of a multi-process run
        plot_losses(run.files.read_metrics(), run.dir / "loss_curve.png", title=run.recipe.name)
