"""A run directory's files: made once, locked by the one process that trains or evaluates it, written only there.

Layout of ``runs/<name>-<timestamp>/``::

    recipe.toml          the resolved recipe (every default filled in)
    parts.json           which distribution and version provided each part
    metrics.jsonl        one JSON object per line: step, time, losses, metric results
    checkpoints/         step-<n>.safetensors (`dalle_kit.store`)
    .lock                held (flock) by the process training or evaluating the run; a second one is refused
    samples/             step-<n>.png: a grid per prompt row
    loss_curve.png
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any


from . import hints
from .checkpoint import remove_library_temporaries
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

RECIPE_FILE = "recipe.toml"
PARTS_FILE = "parts.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
LOSS_CURVE = "loss_curve.png"
#: The files and folders a training or an evaluation writes in a run directory: each must be a regular file (a
#: folder) or absent, never a link (checked when the run is locked, before any work).
RUN_FILES = (RECIPE_FILE, PARTS_FILE, METRICS_FILE, LOSS_CURVE)
RUN_FOLDERS = ("checkpoints", "samples", "tensorboard")


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a metrics file, one a line; lines that are not an object (cut short by a crash, damaged,
    a file that is not ours) are skipped."""
    path = Path(path)
    if not path.is_file():  # absent (or a FIFO, which would block the read)
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if isinstance(row, dict):  # a stray number or list in a damaged file is no row
                rows.append(row)
    return rows


class RunDir:
    """The files of one run directory. ``writes`` is False in the other processes of a multi-process run: rank 0
    alone writes, and their `log` calls only return the row."""

    def __init__(self, path: str | Path, *, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self._lock_file: int | None = None  # the open .lock while this process holds the run
        self._t0 = time.monotonic()
        self._time_offset = 0.0

    @classmethod
    def create(cls, runs_dir: str | Path, name: str, recipe_text: str, origins: dict[str, Any]) -> RunDir:
        """A new ``<runs_dir>/<name>-<timestamp>[-n]/`` holding recipe.toml and parts.json; on a full disk nothing
        half-made is left behind."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir) / f"{name}-{stamp}"
        if base.resolve().parent != Path(runs_dir).resolve():  # recipes allow only safe names; a last defence
            raise UserError(
                f"name '{name}': the run directory {base} would lie outside {runs_dir}/; "
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
            atomic_write_text(directory / RECIPE_FILE, recipe_text)
            atomic_write_text(directory / PARTS_FILE, json.dumps(origins, indent=2) + "\n")
        except UserError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory)

    def opened(self) -> RunDir:
        """An existing run: temporaries a killed writer left are removed and the clock continues from its last row."""
        if self.writes:
            for folder in (self.path, self.path / "checkpoints"):
                remove_stale_temporaries(folder)
        rows = [r for r in self.read_metrics() if "time" in r]
        self._time_offset = rows[-1]["time"] if rows else 0.0
        return self

    def warn_if_parts_changed(self, origins: dict[str, dict[str, Any]]) -> None:
        """A warning per part whose providing distribution or version differs from parts.json's."""
        path = self.path / PARTS_FILE
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved = saved if isinstance(saved, dict) else {}
        except (ValueError, OSError):  # damaged: nothing to compare with
            warnings.warn(
                f"{path}: unreadable; the parts that made this run are not compared with the installed ones",
                stacklevel=3,
            )
            return
        for section, now in origins.items():
            then = saved.get(section)
            if isinstance(then, dict) and (then.get("distribution"), then.get("version")) != (
                now["distribution"],
                now["version"],
            ):
                warnings.warn(
                    f"{self.path}: [{section}] '{now['name']}' was made with {then.get('distribution')} "
                    f"{then.get('version')}, now provided by {now['distribution']} {now['version']}; "
                    "results may differ",
                    stacklevel=3,
                )

    # ------------------------------------------------------------ metrics.jsonl
    @property
    def elapsed(self) -> float:
        """Seconds this run has trained, over all its processes' lives (continued from metrics.jsonl on resume)."""
        return self._time_offset + time.monotonic() - self._t0

    def log(self, step: int, kind: str = "train", **values: Any) -> dict[str, Any]:
        """Append ``{"step", "kind", "time", **values}`` to metrics.jsonl and return it."""
        row = {"step": step, "kind": kind, "time": round(self.elapsed, 3), **values}
        if self.writes:
            append_text(self.path / METRICS_FILE, json.dumps(row) + "\n")
        return row

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS_FILE)

    def unscored(self, metrics: Sequence[str], step: int) -> list[str]:
        """The metrics of `metrics` (in order) that have no evaluation row at `step`."""
        done = {r.get("metric") for r in self.read_metrics() if r.get("kind") == "eval" and r.get("step") == step}
        return [name for name in metrics if name not in done]

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to an interrupted stretch that is replayed on resume)."""
        if not self.writes:
            return
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.path / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))

    # ------------------------------------------------------------ samples
    def sample_path(self, step: int) -> Path:
        return self.path / "samples" / f"step-{step:08d}.png"

    def resume_command(self) -> str:
        """The command that continues this run, as it works where it is printed."""
        return hints.dalle_kit(f"run --resume {hints.quote(str(self.path))}")

    # ------------------------------------------------------------ one process at a time
    def lock(self) -> None:
        """Hold ``.lock`` (flock) until `unlock` or the process ends (the kernel drops it with the process, even when
        killed); a run whose lock another holder has is a one-line `UserError`. The file is opened without following
        a link, and a link, a folder or another non-regular file there is refused in one line (`dalle_kit.files`).
        Holding it, the temporary files a killed writer left in the run are removed, the library's own included."""
        import fcntl

        if self._lock_file is not None:
            return
        path = self.path / LOCK_FILE
        while True:
            fd = open_in_place(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _lock_holder(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "a process"
                stop = f"Ctrl-C where it runs, or kill {holder}" if holder else "Ctrl-C where it runs"
                raise UserError(
                    f"{self.path}: is in use by another process, training or evaluating it ({who} holds {path}); "
                    f"wait for it to finish or stop it ({stop}; training stops with a checkpoint), then try again"
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
            for folder in (self.path, self.path / "checkpoints"):
                remove_stale_temporaries(folder)
                remove_library_temporaries(folder)

    def check_files(self) -> None:
        """Refuse, in one line, a run directory in which a file it writes is a link or not a regular file, or a folder
        it writes into is a link (`RUN_FILES`, `RUN_FOLDERS`): a run received from someone else is never written
        through."""
        for name in RUN_FILES:
            check_target(self.path / name)
        for name in RUN_FOLDERS:
            if (self.path / name).is_symlink():
                raise WriteRefused(
                    f"{self.path / name}: is a symbolic link; dalle-kit never writes through a link: "
                    "replace it with a folder"
                )

    def unlock(self) -> None:
        """Release ``.lock`` and remove the file (a run that is not being trained has none)."""
        if self._lock_file is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)  # while still held, so no one locks the old file
            os.close(self._lock_file)  # closing the file releases the flock
            self._lock_file = None


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
