"""A run's checkpoints folder: save with pruning, refuse a diverged state, load the newest good file; loading
weights into modules (`load_modules`).

Each file is a `dalle_kit.checkpoint` (atomic, sha256-verified, only finite states are written); a damaged
newest file falls back to the newest good one, reported once as a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import checkpoint_name, list_checkpoints, load_state, newest_good, non_finite, save_state, verify
from .errors import UserError
from .files import WriteFailed


class CheckpointStore:
    """``<run>/checkpoints/``. ``writes`` is False in the other processes of a multi-process run (rank 0 saves);
    `continue_with` is the command that resumes the run, named when a save fails."""

    def __init__(self, folder: str | Path, *, writes: bool = True, continue_with: str = ""):
        self.folder = Path(folder)
        self.writes = writes
        self.continue_with = continue_with
        self._reported: set[Path] = set()  # damaged files already reported

    def save(
        self, step: int, state: dict[str, Any], *, keep_last: int = 2, advice: str = "", checked: bool = False
    ) -> Path:
        """Write the checkpoint of `step`, then delete all but the newest `keep_last`. A state with a non-finite
        tensor (or model weights beyond ``checkpoint.WEIGHT_BOUND``) is refused with a one-line `UserError` ending
        in `advice`, and nothing is written or deleted: the newest checkpoint on disk is always finite.
        ``checked=True``: the caller has just run `check_finite` on this very state (it is not scanned again)."""
        if not checked:
            self.check_finite(step, state, advice)
        if not self.writes:
            raise RuntimeError("only the first process of a run writes its checkpoints")
        try:
            path = save_state(self.folder / checkpoint_name(step), {"step": step, **state})
        except WriteFailed as exc:  # a full disk, a file-size limit: nothing replaced, nothing pruned
            kept = ", kept" if self.last_good() is not None else ""
            raise UserError(
                f"step {step}: checkpoint not saved: {exc}; {self.last_good_text()}{kept}; "
                f"then continue with {self.continue_with}"
            ) from None
        for _, old in list_checkpoints(self.folder)[:-keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def check_finite(self, step: int, state: dict[str, Any], advice: str = "") -> None:
        """Raise a one-line `UserError` when `state` holds nan/inf or model weights beyond ``checkpoint.WEIGHT_BOUND``."""
        bad = non_finite(state)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise UserError(
                f"step {step}: the training state has diverged ({'; '.join(bad[:3])}{more}); not saved. "
                f"{self.last_good_text()}" + (f"; {advice}" if advice else "")
            )

    def last_good(self) -> tuple[int, Path] | None:
        """(step, path) of the newest checkpoint that verifies, or None."""
        return newest_good(self.folder)[0]

    def last_good_text(self) -> str:
        found = self.last_good()
        if found is None:
            return "there is no good checkpoint yet"
        return f"the last good checkpoint is {found[1]} (step {found[0]})"

    def good(self) -> tuple[int, Path] | None:
        """(step, path) of the newest checkpoint that verifies, or None when there is none at all. Each damaged newer
        file is reported once as a warning line naming the one used instead; a folder of only damaged files is a
        one-line `UserError`."""
        found, damaged = newest_good(self.folder)
        if found is None and damaged:  # one line names them all: no warning per file before it
            listed = "; ".join(f"{e.path.name}: {e.reason}" for e in damaged)
            raise UserError(
                f"{self.folder}: no usable checkpoint, every one is damaged ({listed}); "
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

    def load(self, prefixes: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        """The newest good checkpoint (see `good`), only its ``step`` and the subtrees in `prefixes` when given;
        None when the run has none yet."""
        found = self.good()
        if found is None:
            return None
        return load_state(found[1], None if prefixes is None else ("step", *prefixes))


def load_modules(modules: dict[str, nn.Module], state: dict[str, Any], *, source: str = "") -> None:
    """Load each module's weights from ``state["models"][key]``; a module the checkpoint lacks, or weights that do not
    fit it, is a one-line `UserError` naming `source` (the checkpoint's run) and the key."""
    saved = state["models"]
    for key, module in modules.items():
        if key not in saved:
            raise UserError(
                f"{source or 'the checkpoint'}: that run has no '{key}' weights; start from a run of the same pipeline"
            )
        try:
            module.load_state_dict(saved[key])
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            detail = lines[1].strip() if len(lines) > 1 else str(exc)
            raise UserError(
                f"{source or 'the checkpoint'}: its {key} weights do not fit this recipe's [{key}] ({detail}); "
                f"use the same [{key}] settings as that run"
            ) from None
