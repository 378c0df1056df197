"""How many CPU threads torch trains with: the ``[train] threads`` setting.

The thread count changes the order of float sums, so it decides whether two runs of one recipe and seed end with
the same weights. By default (``"cpus"``) the trainer takes one thread per CPU this process may use (affinity and
cgroup quota), whatever the load: the same recipe and seed on the same machine give the same weights bit for bit.
On a shared machine that count is the slow choice: beside one busy process every 2-thread step waits for the slower
core (benchmarks/results/threads-contention.md). The opt-in ``"auto"`` looks, just before training, at how many of
those CPUs other processes keep busy (/proc/stat over a quarter of a second) and takes the free ones, at least one;
then it looks again every `ADAPT_SECONDS` and follows: fewer threads when another process arrives, all of them again
when it leaves.

- ``"cpus"``: as above; a resumed run starts with the count saved in its checkpoint.
- ``"auto"``: as above. A resumed run starts with the count saved in its checkpoint. The thread count changes float
  summation order, so a run is bit for bit reproducible (and a resumed run ends where the uninterrupted one does)
  while the count stays put, as it does on a machine nobody else uses; each change is logged as a ``threads`` row
  in metrics.jsonl. A run already training when a second run arrives slows down far less if it follows than if it
  keeps its count (benchmarks/results/threads-contention.md).
- ``"once"``: the same look, once, before training; the count is kept for the whole run and on resume, whatever
  the load does later: bit-exact resume on any machine, at the price of sharing badly with a process that arrives
  later.
- ``"adaptive"``: what ``"auto"`` does (the name of the adapting choice before it became the default; old recipes
  keep loading).
- a number: exactly that many threads.

An ``OMP_NUM_THREADS`` in the environment (torchrun sets 1 per process) is an explicit choice and is kept
whatever the setting.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

ADAPT_SECONDS = 15.0
SAMPLE_SECONDS = 0.25


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


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


class ThreadPolicy:
    """Applies the setting at the start of training (`start`) and, when it adapts, during it (`adapt`)."""

    AUTOMATIC = ("auto", "once", "adaptive")  # chosen from the load

    def __init__(self, setting: int | str, saved: int | None = None):
        self.setting = setting
        self.saved = saved
        self.explicit_env = "OMP_NUM_THREADS" in os.environ
        self.count = torch.get_num_threads()
        self._load: CpuLoad | None = None
        self._next = 0.0

    @property
    def automatic(self) -> bool:
        return self.setting in self.AUTOMATIC and not self.explicit_env

    @property
    def adapting(self) -> bool:
        return self.automatic and self.setting != "once"

    def start(self) -> int:
        if isinstance(self.setting, int):
            self._set(self.setting)
        elif self.setting == "cpus" and not self.explicit_env:
            self._set(self.saved or usable_cpus())  # not the load: reproducible on this machine
        elif self.automatic:
            self._load = CpuLoad()
            if self.saved:
                self._set(self.saved)  # a resumed run starts with its count: bit-exact while the count stays
            else:
                time.sleep(SAMPLE_SECONDS)
                self._set(free_cpus(usable_cpus(), self._load.others()))
            self._next = time.monotonic() + ADAPT_SECONDS
        return self.count

    def adapt(self) -> int | None:
        """When adapting, every `ADAPT_SECONDS`: the new count when it changed, else None."""
        if not self.adapting or self._load is None or time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + ADAPT_SECONDS
        count = free_cpus(usable_cpus(), self._load.others())
        if count == self.count:
            return None
        self._set(count)
        return count

    def _set(self, count: int) -> None:
        self.count = count
        torch.set_num_threads(count)
