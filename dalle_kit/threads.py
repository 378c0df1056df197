"""How many CPU threads torch trains with: the ``[train] threads`` setting, as the core applies it.

The thread count changes the order of float sums, so it decides whether two runs of one recipe and seed end with
the same weights. By default (``"cpus"``) the trainer takes one thread per CPU this process may use (affinity and
cgroup quota), whatever the load: the same recipe and seed on the same machine give the same weights bit for bit.
A number is exactly that many threads. A resumed run starts with the count saved in its checkpoint. The settings
that choose from the load (``"auto"``, ``"once"``, ``"adaptive"``) are the built-in ``adaptive-threads`` plugin's:
the core starts them as it starts ``"cpus"`` and the plugin sets the count through `Threads.set`.

An ``OMP_NUM_THREADS`` in the environment (torchrun sets 1 per process) is an explicit choice and is kept
whatever the setting but a number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


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


class Threads:
    """The trainer's thread count (``trainer.threads``): ``setting`` (the recipe's), ``saved`` (the count in the
    checkpoint a resumed run starts from, else None), ``count`` (now); saved with every checkpoint."""

    def __init__(self, setting: int | str, saved: int | None = None):
        self.setting = setting
        self.saved = saved
        self.count = torch.get_num_threads()

    @property
    def explicit_env(self) -> bool:
        return "OMP_NUM_THREADS" in os.environ

    def start(self) -> int:
        if isinstance(self.setting, int):
            self.set(self.setting)
        elif not self.explicit_env:
            self.set(self.saved or usable_cpus())  # not the load: reproducible on this machine
        return self.count

    def set(self, count: int) -> None:
        self.count = count
        torch.set_num_threads(count)
