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
    a disabled one (every call a no-op) when `quiet`."""
    return Bar(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True,
               mininterval=1.0, leave=leave, **kwargs)
