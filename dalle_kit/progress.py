"""Progress bars on stderr, for every wait of more than a few seconds (training a probe, extracting features,
generating images, a bench's cells), so that no command sits silent; stdout keeps only results."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

#: Seconds between redraws of a bar whose count has not moved (one slow batch), so its clock keeps ticking.
HEARTBEAT = 5.0


class Bar(tqdm):
    """A tqdm bar that also redraws itself every `HEARTBEAT` seconds from a daemon thread while it is open."""

    def __init__(self, *args, heartbeat: float = HEARTBEAT, **kwargs):
        super().__init__(*args, **kwargs)
        self._closed = threading.Event()
        if not self.disable and heartbeat > 0:
            threading.Thread(target=self._beat, args=(heartbeat,), name="progress-heartbeat", daemon=True).start()

    def _beat(self, every: float) -> None:
        while not self._closed.wait(every):
            try:
                self.refresh()
            except Exception:  # the stream went away: the bar is only a courtesy
                return

    def close(self) -> None:
        closed = getattr(self, "_closed", None)  # absent when __init__ failed
        if closed is not None:
            closed.set()
        super().close()


def bar(total: int | None, desc: str, unit: str = "it", *, quiet: bool = False, leave: bool = True, **kwargs) -> Bar:
    """A bar on stderr, redrawn when it moves (at most once a second) and every `HEARTBEAT` seconds when it does not;
    a disabled one (every call a no-op) when `quiet`. Ends a `phase` line still showing."""
    done()
    return Bar(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=quiet,
        dynamic_ncols=True,
        mininterval=1.0,
        leave=leave,
        **kwargs,
    )


_phase: Bar | None = None


def phase(desc: str, *, quiet: bool = False) -> None:
    """A line on stderr with a running clock ("starting: importing torch and the plugins 0:12") for a stretch with
    nothing to count, such as the imports and checks before a command's first output; it lasts until the next
    `phase`, the next `bar` or `done`, and leaves nothing behind. Only on a terminal."""
    global _phase
    done()
    if not quiet and sys.stderr.isatty():  # a transient line means nothing in a log or a captured stream
        _phase = Bar(
            total=None, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, bar_format="{desc} {elapsed}"
        )


def done() -> None:
    """End the current `phase` line, if any (before printing anything else)."""
    global _phase
    if _phase is not None:
        _phase.close()
        _phase = None
