"""Reading files that could hold a pickle without ever running one: tensors and plain arrays only.

Loading a pickle can run any code it names, and a file named by a recipe or an environment variable, found in
a cache, or part of a run directory or a dataset received from someone else may be a crafted one. Every such
read in dalle-kit goes through here:

- `torch_tensors`: a file written by ``torch.save`` (Inception weights), read by torch's weights-only unpickler;
  anything but a dict of named tensors is refused in one line (`UnsafeFile`), nothing in it run.
- `tensors_buffer`: those tensors as an in-memory ``torch.save`` file, for a library that would unpickle a file
  itself (torch-fidelity's ``torch.load(..., weights_only=False)``): it is handed the buffer, never the file.
- `safetensors_file`, `cached_tensors`: safetensors files (a format without pickles); the latter for cache
  entries, which are recomputed when they cannot be read.
- `arrays_pickle`: a pickle of numpy arrays, dicts, lists, numbers and strings (CIFAR-10's python batches), read
  by an unpickler that refuses every other global.
- `npy`: a ``.npy`` array; object arrays (pickles) refused.

Checkpoints are safetensors files read by `dalle_kit.checkpoint` (their tree is JSON metadata).
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch


class UnsafeFile(UserError):
    """A file refused because it holds more than data (pickled code) or cannot be read as data: one line."""

    def __init__(self, path: str | Path, reason: str, fix: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}" + (f"; {fix}" if fix else ""))


def _why(exc: BaseException, what: str = "tensors") -> str:
    """Why a load failed, in a few words (torch's messages run to several sentences)."""
    if isinstance(exc, OSError):
        return f"cannot read it ({exc.strerror or type(exc).__name__})"
    text = str(exc)
    called = re.search(r"GLOBAL ([\w.]+)", text)
    if called:
        return f"it is a pickle that would call {called.group(1)} when loaded; refused, nothing in it was run"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Weights only load failed" in text:  # torch's weights-only unpickler: the reason is on a line of its own
        detail = next(
            (line for line in lines[1:] if not line.startswith(("Please file", "Check the documentation"))), ""
        )
        return (
            f"not a plain file of {what} (torch's weights-only loader: {detail or 'refused'}); refused, nothing in it "
            "was run"
        )
    first = lines[0] if lines else type(exc).__name__
    if len(first) > 120:
        first = first[:120].rsplit(" ", 1)[0] + " ..."
    return f"not a plain file of {what} ({type(exc).__name__}: {first}); refused, nothing in it was run"


def torch_tensors(path: str | Path, *, fix: str = "") -> dict[str, torch.Tensor]:
    """The dict of named tensors a ``torch.save`` file at `path` holds, read without running any pickled code;
    anything else (code, other objects, an unreadable file) is `UnsafeFile` naming `path` and `fix`."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weights-only unpickler's notes on pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsafeFile(path, _why(exc), fix) from None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise UnsafeFile(path, "holds something other than a dict of named tensors", fix)
    return dict(state)


def tensors_buffer(state: dict[str, torch.Tensor]) -> io.BytesIO:
    """`state` as an in-memory ``torch.save`` file: safe for a library that unpickles what it is given."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    buffer.seek(0)
    return buffer


def safetensors_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (the format holds no pickle; an unreadable file raises)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def cached_tensors(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache entry's safetensors file, or None when it is missing or cannot be read (a damaged or
    planted file is recomputed by the caller, never trusted)."""
    try:
        return safetensors_file(path)
    except Exception:  # SafetensorError (not safetensors: a pickle, truncated), OSError
        return None


#: The globals a pickle of numpy arrays names (numpy 1 and 2 module paths; ``_frombuffer`` for protocol 5,
#: ``_codecs.encode`` for bytes in protocol 2). Nothing else is ever looked up, so nothing else can be called.
_ARRAY_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))
}
_ARRAY_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")
        return super().find_class(module, name)


def arrays_pickle(path: str | Path, *, fix: str = "", encoding: str = "latin1") -> Any:
    """A pickle of numpy arrays, dicts, lists, numbers and strings, loaded without running any other code; a pickle
    naming anything else is `UnsafeFile`."""
    try:
        with open(path, "rb") as f:
            return _ArraysUnpickler(f, encoding=encoding).load()
    except Exception as exc:  # UnpicklingError, EOFError, OSError, a numpy module this numpy lacks
        raise UnsafeFile(path, _why(exc, "arrays"), fix) from None


def npy(path: str | Path, mmap_mode: Literal["r+", "r", "w+", "c"] | None = None) -> np.ndarray:
    """A ``.npy`` array (object arrays, which are pickles, raise ValueError)."""
    import numpy as np

    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
