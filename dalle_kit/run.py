"""A run directory and the services pipelines use: building parts, logging, checkpoints, samples.

Layout of ``runs/<name>-<timestamp>/``::

    recipe.toml          the resolved recipe (every default filled in)
    parts.json           which distribution and version provided each part
    metrics.jsonl        one JSON object per line: step, time, losses, metric results
    checkpoints/         step-<n>.safetensors: weights, optimizers, RNG states (atomic writes, sha256-verified,
                         only finite states are written; a damaged newest file falls back to the newest good one)
    .lock                held (flock) by the process training or evaluating the run; a second one is refused
    samples/             step-<n>.png: a grid per prompt row
    loss_curve.png
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
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

from . import distributed, hints, progress
from .checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    newest_good,
    non_finite,
    remove_library_temporaries,
    save_state,
    verify,
)
from .errors import UserError
from .files import (
    WriteFailed,
    WriteRefused,
    append_text,
    atomic_write_text,
    check_target,
    make_folder,
    open_in_place,
    remove_stale_temporaries,
)
from .grid import save_grid
from .plots import plot_losses, read_jsonl
from .recipe import RECIPE_FILE, Recipe, load_recipe
from .registry import Registry

PARTS_FILE = "parts.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
LOSS_CURVE = "loss_curve.png"
#: The files and folders a training or an evaluation writes in a run directory: each must be a regular file (a
#: folder) or absent, never a link (checked when the run is locked, before any work).
RUN_FILES = (RECIPE_FILE, PARTS_FILE, METRICS_FILE, LOSS_CURVE)
RUN_FOLDERS = ("checkpoints", "samples", "tensorboard")
#: Signals that stop training at the end of the current step with a checkpoint (a second one stops at once).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def build_part(spec, section: str, **context: Any):
    """``spec.info.cls(spec.config, **context)``; an exception other than a `UserError` becomes one line naming
    the section, the part, the distribution that provides it and the cause (the original stays as __cause__)."""
    try:
        return spec.info.cls(spec.config, **context)
    except UserError:
        raise
    except Exception as exc:
        info = spec.info
        cause = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(
            f"[{section}] {info.kind.replace('_', ' ')} '{info.name}' (from {info.origin}) could not be built: "
            f"{type(exc).__name__}: {cause}; check its settings with `{hints.dalle_kit(f'plugins show {info.name}')}` "
            f"(--traceback shows where it failed)"
        ) from exc


def check_parts(recipe: Recipe, *, prerequisites: bool = True) -> None:
    """Build every part the recipe names once, on the CPU, and discard it: a part whose constructor fails (a size it
    does not support) is reported now, in one line, before any run directory exists. Datasets are only asked for
    their image size and channels; every other part is built with the context its kind's ``build_context`` names
    (``text_dim`` from the recipe's text encoder, ``image_size`` and ``channels`` from its dataset).

    ``prerequisites=False`` (``recipe check``) lets a part's own `UserError` pass, such as a text encoder whose
    ``pretrained`` run has not been trained yet: the recipe can be checked before the runs it builds on exist (the
    parts that need that encoder's ``text_dim`` are then not built)."""
    sections = recipe.pipeline.info.cls.sections
    data = build_part(recipe.parts["data"], "data") if "data" in recipe.parts else None
    context: dict[str, Any] = {} if data is None else {"image_size": data.image_size, "channels": data.channels}
    later = []
    for section, kind in sections.items():
        spec = recipe.parts.get(section)
        if spec is None or kind == "dataset":
            continue
        if spec.info.cls.build_context:
            later.append((section, spec))
            continue
        try:
            part = build_part(spec, section)
        except UserError as exc:
            if prerequisites or exc.__cause__ is not None:  # a constructor that crashed is always reported
                raise
            continue
        if kind == "text_encoder":
            context["text_dim"] = part.dim
        del part
    for section, spec in later:  # built once with their context and discarded
        needed = spec.info.cls.build_context
        if all(key in context for key in needed):
            build_part(spec, section, **{key: context[key] for key in needed})
    if data is not None:
        recipe.pipeline.info.cls(recipe.train).check(data.image_size, data.channels, context.get("text_dim"))


def pick_device(name: str) -> torch.device:
    """The recipe's ``device``; 'auto' and 'cuda' mean this process's own GPU (LOCAL_RANK) under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f'device \'{name}\' asked for but CUDA is not available here; set device = "auto" or "cpu"')
    if device.type == "cuda" and device.index is None and distributed.requested():
        device = torch.device("cuda", distributed.local_rank())
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
    candidates = sorted(
        (
            p
            for p in path.parent.glob(f"{glob.escape(path.name)}-*")
            if stamped.fullmatch(p.name) and latest_checkpoint(p / "checkpoints") is not None
        ),
        key=lambda p: (p.name[len(path.name) : len(path.name) + 16], int(p.name[len(path.name) + 17 :] or 1)),
    )
    if not candidates:
        raise UserError(
            f"{what} '{text}': no run directory there and no finished run named {path.name}-<timestamp> "
            f"in {path.parent}/; train it first ({hints.dalle_kit('run ...')}) or give the run directory's path"
        )
    return candidates[-1]


def _lock_holder(fd: int) -> str:
    """The pid holding the flock on `fd`'s file: what the holder wrote there, else the kernel's /proc/locks entry for
    the file's inode (a holder that has not written yet); '' when neither says."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").split("\n", 1)[0].strip()
    except OSError:
        text = ""
    if text.isdigit():
        return text
    try:
        st = os.fstat(fd)
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks") as f:
            for line in f:  # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where:
                    if fields[4].isdigit() and fields[4] != "0":
                        return fields[4]
    except OSError:
        pass
    return ""


class Run:
    def __init__(
        self, directory: Path, recipe: Recipe, registry: Registry, *, stop_at: int | None = None, quiet: bool = False
    ):
        self.dir = Path(directory)
        self.recipe = recipe
        self.registry = registry
        self.stop_at = stop_at
        self.quiet = quiet
        self.device = pick_device(recipe.device)
        #: False in the other processes of a multi-process run: rank 0 alone writes the run's files.
        self.writes = distributed.is_main()
        self.interrupted = False
        self.results: dict = {}  # metric name -> MetricResult of the final evaluation
        self._reported: set[Path] = set()  # damaged checkpoints already reported
        self._lock_file: int | None = None  # the open .lock while this process trains the run
        self._t0 = time.monotonic()
        self._time_offset = 0.0

    # ------------------------------------------------------------ creating and opening
    @classmethod
    def create(cls, recipe: Recipe, registry: Registry, runs_dir: str | Path = "runs", **kw) -> Run:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir) / f"{recipe.name}-{stamp}"
        root = Path(runs_dir).resolve()
        if base.resolve().parent != root:  # validate() allows only safe names; this is the last line of defence
            raise UserError(
                f"name '{recipe.name}': the run directory {base} would lie outside {runs_dir}/; "
                "use letters, digits, '.', '_' and '-' only"
            )
        make_folder(runs_dir)
        directory, n = base, 1
        while True:
            try:
                directory.mkdir(exist_ok=False)
                break
            except FileExistsError:
                n += 1
                directory = base.with_name(f"{base.name}-{n}")
            except OSError as exc:  # no space, no permission, a read-only disk
                raise WriteFailed(directory, exc) from None
        try:
            atomic_write_text(directory / RECIPE_FILE, recipe.dumps())
            atomic_write_text(directory / PARTS_FILE, json.dumps(recipe.origins(), indent=2) + "\n")
        except UserError:  # a full disk: no half-made run directory is left behind
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory, recipe, registry, **kw)

    @classmethod
    def open(cls, directory: str | Path, registry: Registry, **kw) -> Run:
        directory = Path(directory)
        if not (directory / RECIPE_FILE).is_file():
            raise UserError(
                f"{directory}: not a run directory (no {RECIPE_FILE}); name a directory under runs/ made by `{hints.dalle_kit('run')}`"
            )
        recipe = load_recipe(directory / RECIPE_FILE, registry, check_name=False)
        run = cls(directory, recipe, registry, **kw)
        for folder in (directory, run.checkpoint_dir) if run.writes else ():  # left by a process killed while writing
            remove_stale_temporaries(folder)
        run.warn_if_parts_changed()
        rows = [r for r in run.read_metrics() if "time" in r]
        run._time_offset = rows[-1]["time"] if rows else 0.0
        return run

    def warn_if_parts_changed(self) -> None:
        path = self.dir / PARTS_FILE
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved = saved if isinstance(saved, dict) else {}
        except (ValueError, OSError):  # damaged: nothing to compare with
            warnings.warn(
                f"{path}: unreadable; the parts that made this run are not compared with the installed ones",
                stacklevel=2,
            )
            return
        for section, now in self.recipe.origins().items():
            then = saved.get(section)
            if isinstance(then, dict) and (then.get("distribution"), then.get("version")) != (
                now["distribution"],
                now["version"],
            ):
                warnings.warn(
                    f"{self.dir}: [{section}] '{now['name']}' was made with {then.get('distribution')} {then.get('version')}, "
                    f"now provided by {now['distribution']} {now['version']}; results may differ",
                    stacklevel=2,
                )

    # ------------------------------------------------------------ parts
    def build(self, section: str, **context: Any):
        """Instantiate the part named in `[section]` with its config and the given context (a constructor that
        raises becomes a one-line `UserError` naming the part, see `build_part`)."""
        spec = self.recipe.parts[section]
        part = build_part(spec, section, **context)
        if isinstance(part, torch.nn.Module):
            part = part.to(self.device)
        return part

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` for the forward passes that train it: DistributedDataParallel when several processes train
        (gradients averaged over the ranks in backward), the module itself otherwise (`dalle_kit.distributed`)."""
        return distributed.parallel(
            module, self.device, sync_batchnorm=getattr(self.recipe.train, "sync_batchnorm", False)
        )

    def build_text_encoder(self, saved: dict[str, Any] | None, captions=None):
        """The recipe's text encoder on the run's device: its non-tensor state (a vocabulary) restored from `saved` (a
        checkpoint, this run's or the ``init_from`` run's, holding ``extra.text_encoder``), else fitted on `captions`.
        The weights are loaded afterwards, with the other modules."""
        encoder = self.build("text_encoder")
        if saved is not None:
            encoder.load_extra_state_json(saved["extra"]["text_encoder"])
        else:
            encoder.fit(captions)
        return encoder.to(self.device)

    def build_dataset(self, section: str = "data"):
        spec = self.recipe.parts[section]
        return spec.info.cls(spec.config)

    # ------------------------------------------------------------ logging
    @property
    def elapsed(self) -> float:
        return self._time_offset + time.monotonic() - self._t0

    def log(self, step: int, kind: str = "train", **values: Any) -> dict[str, Any]:
        row = {"step": step, "kind": kind, "time": round(self.elapsed, 3), **values}
        if not self.writes:
            return row
        append_text(self.dir / METRICS_FILE, json.dumps(row) + "\n")
        return row

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / METRICS_FILE)

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to an interrupted stretch that is replayed on resume)."""
        if not self.writes:
            return
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))

    def progress(self, total: int, initial: int = 0) -> tqdm:
        return progress.bar(total, self.recipe.name, "step", initial=initial, quiet=self.quiet or not self.writes)

    def say(self, text: str) -> None:
        """A line for the user (stdout, above any progress bar)."""
        tqdm.write(text, file=sys.stdout)

    def plot(self) -> None:
        if not self.writes:
            return
        plot_losses(self.dir / METRICS_FILE, self.dir / LOSS_CURVE, title=self.recipe.name)

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def save_checkpoint(self, step: int, state: dict[str, Any], keep_last: int = 2, *, checked: bool = False) -> Path:
        """Write the checkpoint of `step`, then delete all but the newest `keep_last`. A state with a non-finite
        tensor (or model weights beyond ``checkpoint.WEIGHT_BOUND``) is refused with a one-line `UserError` and
        nothing is written or deleted, so the newest checkpoint on disk is always finite. ``checked=True``: the caller
        has just run `check_finite` on this state."""
        if not checked:
            self.check_finite(step, state)
        if not self.writes:
            raise RuntimeError(f"rank {distributed.rank()} may not write checkpoints; rank 0 does")
        try:
            path = save_state(self.checkpoint_dir / checkpoint_name(step), {"step": step, **state})
        except WriteFailed as exc:  # a full disk, a file-size limit: nothing replaced, nothing pruned
            kept = ", kept" if self.last_good_checkpoint() is not None else ""
            raise UserError(
                f"step {step}: checkpoint not saved: {exc}; {self.last_good_text()}{kept}; "
                f"then continue with {self.resume_command()}"
            ) from None
        for _, old in list_checkpoints(self.checkpoint_dir)[:-keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def check_finite(self, step: int, state: dict[str, Any], fix: str = "lower [train] lr") -> None:
        """Raise a one-line `UserError` when `state` holds nan/inf or model weights beyond ``checkpoint.WEIGHT_BOUND``;
        `fix` is the pipeline's advice (``Training.divergence_fix``)."""
        bad = non_finite(state)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise UserError(
                f"step {step}: the training state has diverged ({'; '.join(bad[:3])}{more}); not saved. "
                f"{self.last_good_text()}; {self.retrain_advice(fix)}"
            )

    def resume_command(self) -> str:
        """The command that continues this run, as it works where it is printed."""
        return hints.dalle_kit(f"run --resume {hints.quote(str(self.dir))}")

    def last_good_checkpoint(self) -> tuple[int, Path] | None:
        """(step, path) of the newest checkpoint that verifies, or None."""
        return newest_good(self.checkpoint_dir)[0]

    def last_good_text(self) -> str:
        found = self.last_good_checkpoint()
        if found is None:
            return "there is no good checkpoint yet"
        return f"the last good checkpoint is {found[1]} (step {found[0]})"

    def diverged(self, step: int, losses: Any, fix: str = "lower [train] lr") -> UserError:
        """The error a pipeline raises when a loss turns non-finite: names the step, the losses and the last good
        checkpoint; nothing is saved (``raise run.diverged(step, losses)``)."""
        if isinstance(losses, dict):
            losses = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in losses.items())
        return UserError(
            f"step {step}: loss is not finite ({losses}); stopped without saving. {self.last_good_text()}; "
            f"{self.retrain_advice(fix)}"
        )

    def retrain_advice(self, fix: str) -> str:
        """What to do after a divergence: `fix` in a new run (resuming would replay the same steps, and ``--set`` on a
        resumed run changes only its length); from the last good weights where the pipeline can start from a run."""
        start = (
            f' (init_from = "{self.dir}" in it starts from the last good weights)'
            if getattr(self.recipe.pipeline.info.cls, "finetunes", False)
            else ""
        )
        return f"{fix} in the recipe and start a new run with {hints.dalle_kit('run RECIPE')}{start}"

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

    def good_checkpoint(self) -> tuple[int, Path] | None:
        """(step, path) of the newest checkpoint that verifies, or None when there is none at all. Each damaged newer
        file is reported once as a warning line naming the one used instead; a folder of only damaged files is a
        one-line `UserError`."""
        found, damaged = newest_good(self.checkpoint_dir)
        if found is None and damaged:  # one line names them all: no warning per file before it
            listed = "; ".join(f"{e.path.name}: {e.reason}" for e in damaged)
            raise UserError(
                f"{self.checkpoint_dir}: no usable checkpoint, every one is damaged ({listed}); "
                "restore one from a backup or train again"
            )
        for exc in damaged:
            if exc.path in self._reported:
                continue
            assert found is not None  # a folder of only damaged files was refused above
            self._reported.add(exc.path)
            warnings.warn(
                f"{exc.path}: damaged checkpoint ({exc.reason}); using {found[1]} (step {found[0]}) instead",
                stacklevel=3,
            )
        if found is not None and found[1] not in self._reported and not verify(found[1]):
            self._reported.add(found[1])
            warnings.warn(
                f"{found[1]}: carries no digest (written before checkpoints carried one, or the digest was "
                "removed); loaded unverified",
                stacklevel=3,
            )
        return found

    def load_checkpoint(self, prefixes: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        """The newest good checkpoint (see `good_checkpoint`), or None when the run has none yet."""
        found = self.good_checkpoint()
        if found is None:
            return None
        return load_state(found[1], None if prefixes is None else ("step", *prefixes))

    # ------------------------------------------------------------ one trainer at a time
    def lock(self) -> None:
        """Hold ``.lock`` (flock) until `unlock` or the process ends (the kernel drops it with the process, even when
        killed); a run whose lock another holder has is a one-line `UserError`. The file is opened without following
        a link, and a link, a folder or another non-regular file there is refused in one line (`dalle_kit.files`).
        Holding it, the temporary files a killed writer left in the run are removed, the library's own included."""
        import fcntl

        if self._lock_file is not None:
            return
        path = self.dir / LOCK_FILE
        while True:
            fd = open_in_place(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _lock_holder(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "a process"
                raise UserError(
                    f"{self.dir}: is in use by another process, training or evaluating it ({who} holds {path}); "
                    "wait for it to finish or stop it (Ctrl-C / kill PID), then try again"
                ) from None
            try:  # the holder we waited for may have removed the file (see `unlock`): lock the one at the path
                if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        pid = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(fd, pid, 0)  # the new pid first, then cut: a reader never sees the file empty
            os.ftruncate(fd, len(pid))
        except OSError as exc:
            os.close(fd)
            raise WriteFailed(path, exc, len(pid)) from None
        self._lock_file = fd
        try:
            self.check_files()
        except UserError:
            self.unlock()
            raise
        if self.writes:
            for folder in (self.dir, self.checkpoint_dir):
                remove_stale_temporaries(folder)
                remove_library_temporaries(folder)

    def check_files(self) -> None:
        """Refuse, in one line, a run directory in which a file it writes is a link or not a regular file, or a folder
        it writes into is a link (`RUN_FILES`, `RUN_FOLDERS`): a run received from someone else is never written
        through."""
        for name in RUN_FILES:
            check_target(self.dir / name)
        for name in RUN_FOLDERS:
            if (self.dir / name).is_symlink():
                raise WriteRefused(
                    f"{self.dir / name}: is a symbolic link; dalle-kit never writes through a link: "
                    "replace it with a folder"
                )

    def unlock(self) -> None:
        """Release ``.lock`` and remove the file (a run that is not being trained has none)."""
        if self._lock_file is not None:
            (self.dir / LOCK_FILE).unlink(missing_ok=True)  # while still held, so no one locks the old file
            os.close(self._lock_file)  # closing the file releases the flock
            self._lock_file = None

    # ------------------------------------------------------------ samples
    def sample_path(self, step: int) -> Path:
        return self.dir / "samples" / f"step-{step:08d}.png"

    def save_samples(self, step: int, images: torch.Tensor, prompts: list[str]) -> Path:
        return save_grid(images, prompts, self.sample_path(step), title=f"{self.recipe.name}  step {step}")

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
        """Ctrl-C, SIGTERM (kill, a batch scheduler) and SIGHUP (a closed terminal) ask the pipeline to stop at the end
        of the current step; it then saves a checkpoint. A second signal stops at once."""

        def handler(signum, frame):
            # A second signal stops at once; not under torchrun, which passes on the terminal's Ctrl-C that every
            # worker has already had (its agent kills workers that are not done 30 s later).
            if self.interrupted and not distributed.requested():
                raise KeyboardInterrupt
            self.interrupted = True

        previous = {}
        try:
            for sig in STOP_SIGNALS:
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            for sig, old in previous.items():
                signal.signal(sig, old)
            yield
            return
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
