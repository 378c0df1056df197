"""`Run`: what a pipeline's ``setup(run, state)`` receives, the recipe plus four small services.

- ``run.parts`` (`dalle_kit.building.PartBuilder`): build the parts the recipe names, on ``run.device``;
- ``run.rng(name)``: the run's random stream `name`, seeded from the recipe's seed; the trainer saves and restores
  every stream a pipeline took, so a resumed run draws what an uninterrupted one would;
- ``run.checkpoints`` (`dalle_kit.store.CheckpointStore`): the run's checkpoints (the trainer saves them);
- ``run.files`` (`dalle_kit.rundir.RunDir`): the run directory: metrics.jsonl (``run.log``), samples, the lock.

The training loop and its state (step, stop signals, resume) belong to `dalle_kit.trainer.Trainer`.
"""

from __future__ import annotations

import glob
import hashlib
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import distributed, hints
from .building import PartBuilder, pick_device
from .checkpoint import latest_checkpoint, load_state, newest_good
from .errors import UserError
from .recipe import Recipe, load_recipe
from .registry import Registry
from .rundir import RECIPE_FILE, RunDir
from .store import CheckpointStore

#: The streams the built-in pipelines drew from before streams had names keep their seeds (recipe seed + offset), so
#: a recipe trains to the same weights as before; any other name is seeded from a hash of (seed, name).
LEGACY_STREAMS = {"data": 1, "noise": 2, "samples": 3, "augment": 4}


def stream_seed(seed: int, name: str) -> int:
    """The seed of random stream `name` in a run whose recipe has `seed`."""
    if name in LEGACY_STREAMS:
        return seed + LEGACY_STREAMS[name]
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def resolve_run_dir(text: str | Path, *, what: str = "run") -> Path:
    """A run directory, or a run's name prefix (``runs/shapes-clip-pretrain``) meaning its newest finished run; a
    bare name (``shapes``) that names none in the current folder is looked for in ``runs/``.

    Recipes that build on another run (``init_from``, a ``clip`` encoder's ``pretrained``) name it
    without the timestamp, so the same recipe works after the earlier one is re-run. Raises a
    one-line `UserError` when nothing matches.
    """
    path = Path(text).expanduser()
    if (path / RECIPE_FILE).is_file():
        return path
    candidates = _runs_named(path)
    bare = str(text) == path.name and not path.exists()  # a bare name: runs/, the default folder, is looked in too
    if not candidates and bare:
        candidates = _runs_named(Path("runs", path.name))
    if not candidates:
        from .registry import get_registry

        if path.name in get_registry().recipes:  # a shipped or plugin recipe of that name makes such runs
            runs = "" if bare or path.parent == Path("runs") else f" --runs-dir {hints.quote(str(path.parent))}"
            how = f"train it first with `{hints.dalle_kit(f'run {path.name}{runs}')}`"
        else:
            how = "train that run first"
        raise UserError(
            f"{what} '{text}': no run directory there and no finished run named {path.name}-<timestamp> "
            f"in {'./ or runs/' if bare else f'{path.parent}/'}; {how}, or give the run directory's path"
        )
    return candidates[-1]


def _runs_named(path: Path) -> list[Path]:
    """The runs named ``<path.name>-<timestamp>`` beside `path` that have a checkpoint, oldest first."""
    stamped = re.compile(re.escape(path.name) + r"-\d{8}-\d{6}(-\d+)?")
    return sorted(
        (
            p
            for p in path.parent.glob(f"{glob.escape(path.name)}-*")
            if stamped.fullmatch(p.name) and latest_checkpoint(p / "checkpoints") is not None
        ),
        key=lambda p: (p.name[len(path.name) : len(path.name) + 16], int(p.name[len(path.name) + 17 :] or 1)),
    )


class Run:
    """A recipe being trained, sampled or evaluated in its run directory (see the module docstring).

    ``quiet`` silences progress bars; ``results`` holds the final evaluation's `MetricResult` by metric name (put
    there by a ``run_trained`` hook: the built-in midrun-eval plugin) and ``interrupted`` whether a signal stopped the
    last training, once `dalle_kit.api.train` returns."""

    def __init__(self, directory: str | Path, recipe: Recipe, registry: Registry, *, quiet: bool = False):
        self.recipe = recipe
        self.registry = registry
        self.quiet = quiet
        self.device = pick_device(recipe.device)
        self.files = RunDir(directory, writes=distributed.is_main())
        self.checkpoints = CheckpointStore(
            self.files.path / "checkpoints", writes=self.files.writes, continue_with=self.files.resume_command()
        )
        self.parts = PartBuilder(recipe, self.device)
        #: The random streams taken through `rng`, by name (saved in checkpoints under ``rng.<name>``).
        self.streams: dict[str, torch.Generator] = {}
        self.results: dict = {}
        self.interrupted = False

    @classmethod
    def create(cls, recipe: Recipe, registry: Registry, runs_dir: str | Path = "runs", **kw: Any) -> Run:
        """A new run directory for `recipe` under `runs_dir` (``<name>-<timestamp>``)."""
        files = RunDir.create(runs_dir, recipe.name, recipe.dumps(), recipe.origins())
        return cls(files.path, recipe, registry, **kw)

    @classmethod
    def open(cls, directory: str | Path, registry: Registry, **kw: Any) -> Run:
        """An existing run directory, or a run's name meaning its newest run (`resolve_run_dir`), its recipe read back
        (a warning per part now provided by another version)."""
        directory = Path(directory)
        if not directory.exists():
            directory = resolve_run_dir(directory)
        if not (directory / RECIPE_FILE).is_file():
            raise UserError(
                f"{directory}: not a run directory (no {RECIPE_FILE}); name a directory under runs/ made by "
                f"`{hints.dalle_kit('run')}`"
            )
        recipe = load_recipe(directory / RECIPE_FILE, registry, check_name=False)
        run = cls(directory, recipe, registry, **kw)
        run.files.opened()
        run.files.warn_if_parts_changed(recipe.origins())
        return run

    @property
    def dir(self) -> Path:
        return self.files.path

    def rng(self, name: str) -> torch.Generator:
        """The run's random stream `name` (a CPU `torch.Generator`): the same object on every call, seeded from the
        recipe's seed and the name (`stream_seed`) when first taken, restored from the checkpoint on resume."""
        if name not in self.streams:
            self.streams[name] = torch.Generator().manual_seed(stream_seed(self.recipe.seed, name))
        return self.streams[name]

    def log(self, step: int, kind: str = "train", **values: Any) -> dict[str, Any]:
        """A row in metrics.jsonl (`RunDir.log`)."""
        return self.files.log(step, kind, **values)

    def say(self, text: str) -> None:
        """A line for the user (stdout, above any progress bar)."""
        tqdm.write(text, file=sys.stdout)

    def retrain_advice(self, fix: str) -> str:
        """What to do after a divergence: `fix` in a new run (resuming would replay the same steps, and ``--set`` on a
        resumed run changes only its length), with the command that starts one from this run's recipe at half its
        learning rate, from the last good weights where the pipeline can start from a run."""
        words = [f"run {hints.quote(str(self.dir / RECIPE_FILE))}"]
        lr = getattr(self.recipe.train, "lr", None)
        if isinstance(lr, float) and lr > 0:
            words.append(f"--set train.lr={lr / 2:g}")
        if getattr(self.recipe.pipeline.info.cls, "finetunes", False):
            words.append(f"--set init_from={hints.quote(str(self.dir))}")  # its last good weights
        return f"{fix} in a new run, e.g. {hints.dalle_kit(' '.join(words))}"


def init_from_state(run) -> dict[str, Any] | None:
    """The ``init_from`` run's latest weights and extra state (``{"step", "models", "extra", "dir"}``), or None."""
    if not run.recipe.init_from:
        return None
    directory = resolve_run_dir(run.recipe.init_from, what="init_from")
    found, damaged = newest_good(directory / "checkpoints")
    for exc in damaged:
        warnings.warn(
            f"init_from: {exc.path}: damaged checkpoint ({exc.reason}); "
            + (f"using {found[1]} (step {found[0]}) instead" if found else "no good checkpoint left"),
            stacklevel=2,
        )
    if found is None:
        raise UserError(
            f"init_from '{run.recipe.init_from}': {directory} has no "
            + ("usable " if damaged else "")
            + "checkpoint yet; train it first"
        )
    state = load_state(found[1], ("step", "models", "extra"))
    state["dir"] = str(directory)
    return state
