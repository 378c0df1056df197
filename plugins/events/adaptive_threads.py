"""Built-in training plugin `adaptive-threads`: the ``[train] threads`` settings that choose from the load.

- ``"auto"``: just before training, look at how many of the usable CPUs other processes keep busy (/proc/stat over
  `cpuload.SAMPLE_SECONDS`) and take the free ones, at least one; then look again every `cpuload.ADAPT_SECONDS` and
  follow: fewer threads when another process arrives, all of them again when it leaves. Each change is logged as a
  ``threads`` row in metrics.jsonl. The thread count changes float summation order, so such a run is bit for bit
  reproducible only while the count stays put, as it does on a machine nobody else uses.
- ``"once"``: the same look, once, before training; the count is kept for the whole run: bit-exact resume on any
  machine, at the price of sharing badly with a process that arrives later.
- ``"adaptive"``: what ``"auto"`` does (an older name; old recipes keep loading).

A resumed run starts with the count saved in its checkpoint (the core sets it) without looking; ``"auto"`` follows
the load from there. An ``OMP_NUM_THREADS`` in the environment (torchrun sets 1 per process) wins.
"""

from __future__ import annotations

import time
import weakref

import dalle_kit
from dalle_kit_plugins.common import cpuload

AUTOMATIC = ("auto", "once", "adaptive")
#: Trainers following the load -> [their CpuLoad, when to look next].
_following: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dalle_kit.hookimpl
def train_start(trainer) -> None:
    threads = trainer.threads
    if threads.setting not in AUTOMATIC or threads.explicit_env:
        return
    load = cpuload.CpuLoad()
    if not threads.saved:
        time.sleep(cpuload.SAMPLE_SECONDS)
        threads.set(cpuload.free_cpus(cpuload.usable_cpus(), load.others()))
    if threads.setting != "once":
        _following[trainer] = [load, time.monotonic() + cpuload.ADAPT_SECONDS]


@dalle_kit.hookimpl
def train_step_end(trainer, step: int, values: dict[str, float]) -> None:
    follow = _following.get(trainer)
    if follow is None or time.monotonic() < follow[1]:
        return
    follow[1] = time.monotonic() + cpuload.ADAPT_SECONDS
    count = cpuload.free_cpus(cpuload.usable_cpus(), follow[0].others())
    if count != trainer.threads.count:
        trainer.threads.set(count)
        trainer.run.log(step, kind="threads", threads=count, setting=str(trainer.threads.setting))


@dalle_kit.hookimpl
def train_end(trainer, step: int, finished: bool) -> None:
    _following.pop(trainer, None)
