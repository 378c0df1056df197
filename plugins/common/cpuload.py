"""How busy the machine is: CPU time other processes spent between two looks at /proc/stat, and the CPUs they
leave free. For the ``adaptive-threads`` training plugin and for metrics that size their BLAS thread pools."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dalle_kit import usable_cpus

#: How often a caller that follows the load looks again, and how long one look samples /proc/stat.
ADAPT_SECONDS = 15.0
SAMPLE_SECONDS = 0.25

__all__ = ["ADAPT_SECONDS", "SAMPLE_SECONDS", "CpuLoad", "free_cpus", "free_cpus_now", "usable_cpus"]


class CpuLoad:
    """CPU time spent by other processes between two looks (/proc/stat's machine total minus this process's)."""

    def __init__(self):
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(v) for v in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        hz = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return (sum(ticks) - idle) / hz, time.monotonic(), own.user + own.system

    def others(self) -> float | None:
        """Cores kept busy by other processes since the last call (None where /proc/stat is missing)."""
        now = self._read()
        if now is None or self._last is None:
            return None
        busy, wall, own = (a - b for a, b in zip(now, self._last))
        self._last = now
        if wall <= 0:
            return None
        return max(0.0, (busy - own) / wall)


def free_cpus(usable: int, others: float | None) -> int:
    """Threads for the CPUs other processes leave free (all of them when the load is unknown), at least one."""
    if others is None:
        return usable
    return max(1, min(usable, usable - round(others)))


_last_look: list[float] = []  # [monotonic time, free CPUs]


def free_cpus_now() -> int:
    """CPUs this process may use that other processes leave free (at least one), from a `SAMPLE_SECONDS` look at
    /proc/stat; the answer is reused for `ADAPT_SECONDS` (for callers outside training, e.g. numpy's BLAS threads)."""
    if not _last_look or time.monotonic() - _last_look[0] > ADAPT_SECONDS:
        load = CpuLoad()
        time.sleep(SAMPLE_SECONDS)
        _last_look[:] = [time.monotonic(), free_cpus(usable_cpus(), load.others())]
    return int(_last_look[1])
