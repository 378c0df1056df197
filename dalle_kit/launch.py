"""``dalle-kit run --nproc N``: torchrun on this machine, started for the user.

`launch` checks the recipe (or the run to resume) in this process, so a mistake is one line before any process
starts, then runs ``python -m dalle_kit.launch`` (torchrun's own ``main``) in a session of its own: a Ctrl-C
reaches it once, from here, and torchrun stops each worker once (each finishes its step and rank 0 saves a
checkpoint); SIGTERM and SIGHUP are passed on the same way. Run as a module, this file is torchrun with its
exits made plain: a worker's own exit code (2 for a one-line error the worker has printed) instead of torchrun's
failure report, and 128 + the signal instead of a traceback when it was stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

from .api import DEFAULT_RECIPE, check_extension
from .errors import UserError
from .recipe import load_recipe
from .registry import get_registry
from .building import pick_device
from .run import Run
from .trainer import STOP_SIGNALS


def launch(nproc: int, args: Sequence[str], target: str | None, overrides: Sequence[str], resume: str | None) -> int:
    """Check, then run ``dalle-kit ARGS`` in `nproc` processes through torchrun; returns their exit code."""
    registry = get_registry()
    if resume is not None:
        if target is not None:
            raise UserError("give either a recipe or --resume RUN_DIR, not both")
        Run.open(resume, registry, quiet=True)
        check_extension(overrides)
    else:
        recipe = load_recipe(target or DEFAULT_RECIPE, registry, overrides)
        if recipe.train.sync_batchnorm and pick_device(recipe.device).type != "cuda":
            raise UserError("[train] sync_batchnorm = true needs CUDA (torch's SyncBatchNorm); set it false on the CPU")
    command = [
        sys.executable,
        "-m",
        "dalle_kit.launch",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "dalle_kit",
        *args,
    ]
    proc = subprocess.Popen(command, start_new_session=True)
    stopped: list[int] = []

    def forward(signum, frame):
        if not stopped:
            stopped.append(signum)
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 130 if stopped else code


def torchrun(argv: Sequence[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(list(argv))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(torchrun(sys.argv[1:]))
