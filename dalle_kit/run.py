"""A run directory and the services pipelines use: building parts, logging, checkpoints, samples.

Layout of ``runs/<name>-<timestamp>/``::

    recipe.toml          the resolved recipe (every default filled in)
    parts.json           which distribution and version provided each part
    metrics.jsonl        one JSON object per line: step, time, losses, metric results
    checkpoints/         step-<n>.safetensors: weights, optimizers, RNG states (atomic writes)
    samples/             step-<n>.png: a grid per prompt row
    loss_curve.png
"""

from __future__ import annotations

import glob
import json
import re
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .checkpoint import checkpoint_name, latest_checkpoint, list_checkpoints, load_state, save_state
from .errors import UserError
from .grid import save_grid
from .plots import plot_losses, read_jsonl
from .recipe import RECIPE_FILE, Recipe, load_recipe
from .registry import Registry

PARTS_FILE = "parts.json"
METRICS_FILE = "metrics.jsonl"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for but CUDA is not available here; set device = \"auto\" or \"cpu\"")
    return device


def resolve_run_dir(text: str | Path, *, what: str = "run") -> Path:
    """A run directory, or a run's name prefix (``runs/shapes-clip-pretrain``) meaning its newest finished run.

    Recipes that build on another run (``init_from``, a ``clip`` encoder's ``pretrained``) name it
    without the timestamp, so the same recipe works after the earlier one is re-run. Raises a
    one-line `UserError` when nothing matches.
    """
    path = Path(text).expanduser()
    if (path / "recipe.toml").is_file():
        return path
    stamped = re.compile(re.escape(path.name) + r"-\d{8}-\d{6}(-\d+)?")
    candidates = sorted((p for p in path.parent.glob(f"{glob.escape(path.name)}-*")
                         if stamped.fullmatch(p.name) and latest_checkpoint(p / "checkpoints") is not None),
                        key=lambda p: (p.name[len(path.name):len(path.name) + 16], int(p.name[len(path.name) + 17:] or 1)))
    if not candidates:
        raise UserError(f"{what} '{text}': no run directory there and no finished run named {path.name}-<timestamp> "
                        f"in {path.parent}/; train it first (dalle-kit run ...) or give the run directory's path")
    return candidates[-1]


class Run:
    def __init__(self, directory: Path, recipe: Recipe, registry: Registry, *, stop_at: int | None = None, quiet: bool = False):
        self.dir = Path(directory)
        self.recipe = recipe
        self.registry = registry
        self.stop_at = stop_at
        self.quiet = quiet
        self.device = pick_device(recipe.device)
        self.interrupted = False
        self.results: dict = {}  # metric name -> MetricResult of the final evaluation
        self._t0 = time.monotonic()
        self._time_offset = 0.0

    # ------------------------------------------------------------ creating and opening
    @classmethod
    def create(cls, recipe: Recipe, registry: Registry, runs_dir: str | Path = "runs", **kw) -> Run:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir) / f"{recipe.name}-{stamp}"
        directory, n = base, 1
        while True:
            try:
                directory.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                n += 1
                directory = base.with_name(f"{base.name}-{n}")
        (directory / RECIPE_FILE).write_text(recipe.dumps())
        (directory / PARTS_FILE).write_text(json.dumps(recipe.origins(), indent=2) + "\n")
        return cls(directory, recipe, registry, **kw)

    @classmethod
    def open(cls, directory: str | Path, registry: Registry, **kw) -> Run:
        directory = Path(directory)
        if not (directory / RECIPE_FILE).is_file():
            raise UserError(f"{directory}: not a run directory (no {RECIPE_FILE}); name a directory under runs/ made by `dalle-kit run`")
        recipe = load_recipe(directory / RECIPE_FILE, registry)
        run = cls(directory, recipe, registry, **kw)
        run.warn_if_parts_changed()
        rows = [r for r in run.read_metrics() if "time" in r]
        run._time_offset = rows[-1]["time"] if rows else 0.0
        return run

    def warn_if_parts_changed(self) -> None:
        path = self.dir / PARTS_FILE
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        for section, now in self.recipe.origins().items():
            then = saved.get(section)
            if then and (then["distribution"], then["version"]) != (now["distribution"], now["version"]):
                warnings.warn(f"{self.dir}: [{section}] '{now['name']}' was made with {then['distribution']} {then['version']}, "
                              f"now provided by {now['distribution']} {now['version']}; results may differ", stacklevel=2)

    # ------------------------------------------------------------ parts
    def build(self, section: str, **context: Any):
        """Instantiate the part named in `[section]` with its config and the given context."""
        spec = self.recipe.parts[section]
        part = spec.info.cls(spec.config, **context)
        if isinstance(part, torch.nn.Module):
            part = part.to(self.device)
        return part

    def build_dataset(self, section: str = "data"):
        spec = self.recipe.parts[section]
        return spec.info.cls(spec.config)

    # ------------------------------------------------------------ logging
    @property
    def elapsed(self) -> float:
        return self._time_offset + time.monotonic() - self._t0

    def log(self, step: int, kind: str = "train", **values: Any) -> dict[str, Any]:
        row = {"step": step, "kind": kind, "time": round(self.elapsed, 3), **values}
        with open(self.dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / METRICS_FILE)

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to an interrupted stretch that is replayed on resume)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        tmp = self.dir / f".{METRICS_FILE}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(self.dir / METRICS_FILE)

    def progress(self, total: int, initial: int = 0) -> tqdm:
        return tqdm(total=total, initial=initial, desc=self.recipe.name, unit="step", dynamic_ncols=True,
                    disable=self.quiet, file=sys.stderr, mininterval=1.0)

    def say(self, text: str) -> None:
        """A line for the user (stdout, above any progress bar)."""
        tqdm.write(text, file=sys.stdout)

    def plot(self) -> None:
        plot_losses(self.dir / METRICS_FILE, self.dir / "loss_curve.png", title=self.recipe.name)

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def save_checkpoint(self, step: int, state: dict[str, Any], keep_last: int = 2) -> Path:
        path = save_state(self.checkpoint_dir / checkpoint_name(step), {"step": step, **state})
        for _, old in list_checkpoints(self.checkpoint_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
        return path

    def resume(self, state: dict[str, Any] | None, *, models: dict, optimizers: dict, rngs: dict) -> int:
        """Restore a training loop from `state` (its latest checkpoint, or None for a fresh start): weights,
        optimizers, the global torch RNG and the loop's own generators; drop metric rows logged after it.
        Returns the step to continue from (0 when fresh)."""
        if state is None:
            return 0
        for key, module in models.items():
            module.load_state_dict(state["models"][key])
        for key, opt in optimizers.items():
            opt.load_state_dict(state["optim"][key])
        torch.set_rng_state(state["rng"]["torch"])
        for key, rng in rngs.items():
            rng.set_state(state["rng"][key])
        self.truncate_metrics(state["step"])
        return int(state["step"])

    def training_state(self, *, models: dict, optimizers: dict, rngs: dict, **extra: Any) -> dict[str, Any]:
        """What `resume` reads back: the ``state`` argument of `save_checkpoint` for a training loop."""
        return {
            "models": {k: m.state_dict() for k, m in models.items()},
            "optim": {k: o.state_dict() for k, o in optimizers.items()},
            "rng": {"torch": torch.get_rng_state(), **{k: r.get_state() for k, r in rngs.items()}},
            **extra,
        }

    def load_checkpoint(self, prefixes: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        found = latest_checkpoint(self.checkpoint_dir)
        if found is None:
            return None
        return load_state(found[1], None if prefixes is None else ("step", *prefixes))

    # ------------------------------------------------------------ samples
    def save_samples(self, step: int, images: torch.Tensor, prompts: list[str]) -> Path:
        return save_grid(images, prompts, self.dir / "samples" / f"step-{step:08d}.png", title=f"{self.recipe.name}  step {step}")

    def sample_grid(self, step: int, draw) -> Path:
        """Draw the recipe's [sample] prompts (``per_prompt`` each, fixed noise) with `draw` and save the grid."""
        prompts = self.recipe.sample.all_prompts()
        n = self.recipe.sample.per_prompt
        images = draw([p for p in prompts for _ in range(n)], torch.Generator().manual_seed(self.recipe.seed + 3))
        return self.save_samples(step, images, prompts)

    # ------------------------------------------------------------ evaluation
    def evaluate_due(self, step: int, final_step: int) -> bool:
        """Whether the recipe's [eval] asks for an evaluation at this intermediate step."""
        every = self.recipe.eval.every
        return bool(self.recipe.eval.metrics) and bool(every) and step % every == 0 and step < final_step

    def evaluate(self, step: int | None = None, draw=None) -> dict:
        """Compute the recipe's [eval] metrics (logged to metrics.jsonl with their protocol)."""
        from .evaluation import evaluate_configured

        return evaluate_configured(self, step=step, draw=draw)

    # ------------------------------------------------------------ stopping
    def should_stop(self, step: int) -> bool:
        return self.interrupted or (self.stop_at is not None and step >= self.stop_at)

    @contextmanager
    def catch_interrupt(self):
        """Ctrl-C asks the pipeline to stop at the end of the current step (it then saves a checkpoint)."""

        def handler(signum, frame):
            if self.interrupted:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.interrupted = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not in the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
