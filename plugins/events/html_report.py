"""Built-in training plugin `html-report`: the run's ``report.html`` (`dalle_kit.tools.report`: metrics with their protocols,
loss curves, every sample grid, the recipe and its parts, in one self-contained page) written when training ends and
rewritten after every evaluation (mid-run, final, or ``dalle-kit eval``), so it always shows the newest scores.
``dalle-kit report RUN`` writes it on demand. A report that cannot be written is one warning line; training and
evaluation results are kept."""

from __future__ import annotations

import warnings

import dalle_kit
from dalle_kit import hints
from dalle_kit import one_line
from dalle_kit.tools.report import write_report


def _write(run) -> None:
    if not run.files.writes:  # another rank of a multi-process run: rank 0 writes files
        return
    try:
        write_report(run.dir)
    except Exception as exc:  # a page is not worth a failed run: its checkpoints and metrics are already on disk
        warnings.warn(
            f"{run.dir}: report.html not written ({one_line(exc)}); `{hints.dalle_kit(f'report {hints.quote(str(run.dir))}')}` retries",
            stacklevel=2,
        )


@dalle_kit.hookimpl(trylast=True)  # after the other plugins have written this run's last grid and rows
def train_end(trainer, step: int, finished: bool) -> None:
    _write(trainer.run)


@dalle_kit.hookimpl(trylast=True)
def run_evaluated(run, step: int, results) -> None:
    _write(run)
