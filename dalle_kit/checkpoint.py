"""Checkpoints as safetensors files, written atomically (write to a temporary name, fsync, rename, fsync the folder).

A checkpoint is a nested dict whose leaves are tensors or JSON values (module and optimizer state
dicts, RNG states, counters). Tensors are stored flat under '/'-joined keys; the rest of the tree
is kept as JSON in the file's metadata, so nothing is ever unpickled.

Integrity: the metadata also carries ``dalle_kit.sha256``, a digest of every tensor (name, dtype,
shape, bytes), checked by `verify` before a checkpoint is used. A file that cannot be read, is not
ours, or whose digest does not match is damaged (`CheckpointDamaged`); `newest_good` skips it. Files
written before digests existed carry none: they are accepted unverified.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import first_line
from .files import atomic_write, atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported: plugins import them from here)
from .files import TEMP_RE, remove_stale_temporaries  # noqa: F401  (re-exported)

_TREE_KEY = "dalle_kit.tree"
_DIGEST_KEY = "dalle_kit.sha256"
_STEP_RE = re.compile(r"step-(\d+)\.safetensors$")
#: Temporary files safetensors' own ``save_file`` makes beside its target (``.tmp`` and six letters or digits, the
#: tempfile crate's names): left in checkpoints/ by a writer killed inside it (dalle-kit before it wrote the bytes itself).
LIBRARY_TEMP_RE = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
#: Model weights (tensors under ``models/``) larger than this in absolute value make a checkpoint unusable:
#: a network whose weights reach it has diverged even when every number is still finite.
WEIGHT_BOUND = 1e6


class CheckpointDamaged(Exception):
    """A checkpoint file that cannot be used: unreadable, not a dalle-kit checkpoint, or its digest does not match."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: damaged checkpoint ({reason})")


def _flatten(node: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        key = prefix.rstrip("/")
        tensors[key] = node.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(node, dict):
        if all(isinstance(k, str) for k in node):
            return {"__dict__": {k: _flatten(v, f"{prefix}{k}/", tensors) for k, v in node.items()}}
        return {"__items__": [[k, _flatten(v, f"{prefix}{k}/", tensors)] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        return {
            "__list__": [_flatten(v, f"{prefix}{i}/", tensors) for i, v in enumerate(node)],
            "tuple": isinstance(node, tuple),
        }
    if node is None or isinstance(node, (bool, int, float, str)):
        return {"__value__": node}
    raise TypeError(f"cannot store {type(node).__name__} in a checkpoint")


def _unflatten(node: Any, get_tensor) -> Any:
    if "__tensor__" in node:
        return get_tensor(node["__tensor__"])
    if "__dict__" in node:
        return {k: _unflatten(v, get_tensor) for k, v in node["__dict__"].items()}
    if "__items__" in node:
        return {k: _unflatten(v, get_tensor) for k, v in node["__items__"]}
    if "__list__" in node:
        items = [_unflatten(v, get_tensor) for v in node["__list__"]]
        return tuple(items) if node.get("tuple") else items
    return node["__value__"]


def _tensor_digest(tensors: dict[str, torch.Tensor] | None = None, *, names=None, get_tensor=None) -> str:
    """sha256 over every tensor in name order: its name, dtype, shape and bytes."""
    h = hashlib.sha256()
    keys = sorted(tensors) if tensors is not None else sorted(names)
    for key in keys:
        t = tensors[key] if tensors is not None else get_tensor(key)
        t = t.detach().cpu().contiguous()
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def non_finite(state: dict[str, Any], bound: float | None = WEIGHT_BOUND) -> list[str]:
    """Names ('models/generator/fc.weight: nan') of the floating tensors in `state` that hold nan or inf, and of the
    model weights (under ``models/``) beyond ±`bound`; empty when the state is fit to save."""
    tensors: dict[str, torch.Tensor] = {}
    _flatten_refs(state, "", tensors)
    bad = []
    for key, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()) or not t.numel():
            continue
        t = t.detach()
        if not bool(torch.isfinite(t).all()):
            bad.append(f"{key}: {'nan' if bool(torch.isnan(t).any()) else 'inf'}")
        elif bound is not None and key.startswith("models/") and float(t.abs().max()) > bound:
            bad.append(f"{key}: |w| = {float(t.abs().max()):.3g} > {bound:g}")
    return bad


def _flatten_refs(node: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    """Like `_flatten` without copying: the tensors of `node` by their checkpoint names."""
    if isinstance(node, torch.Tensor):
        tensors[prefix.rstrip("/")] = node
    elif isinstance(node, dict):
        for k, v in node.items():
            _flatten_refs(v, f"{prefix}{k}/", tensors)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _flatten_refs(v, f"{prefix}{i}/", tensors)


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically and durably: a reader (or a machine that loses power) never sees a
    half-written file. The file carries a digest of its tensors, checked by `verify`."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    # Serialised in memory and written by `atomic_write_bytes`: no temporary file of the library's own, and a full
    # disk or a file-size limit is one line naming the bytes the file needs (`dalle_kit.files.WriteFailed`).
    data = save(tensors, metadata={_TREE_KEY: json.dumps(tree), _DIGEST_KEY: _tensor_digest(tensors)})
    atomic_write_bytes(path, data)
    return path


_verified: dict[tuple, bool] = {}


def verify(path: str | Path) -> bool:
    """Check that `path` is a readable dalle-kit checkpoint whose tensors match its digest. True: verified;
    False: readable but written before digests (accepted unverified). Raises `CheckpointDamaged` otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointDamaged(path, exc.strerror or type(exc).__name__) from None
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    if st.st_size == 0:
        raise CheckpointDamaged(path, "empty file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if _TREE_KEY not in meta:
                raise CheckpointDamaged(path, "not a dalle-kit checkpoint: no dalle_kit.tree in its metadata")
            json.loads(meta[_TREE_KEY])
            expected = meta.get(_DIGEST_KEY)
            if expected is not None and _tensor_digest(names=list(f.keys()), get_tensor=f.get_tensor) != expected:
                raise CheckpointDamaged(path, "sha256 of its tensors does not match the digest it was written with")
    except CheckpointDamaged:
        raise
    except Exception as exc:  # SafetensorError (truncated, bad header), OSError, JSON errors
        detail = first_line(exc) or type(exc).__name__
        raise CheckpointDamaged(path, f"unreadable: {detail}") from None
    _verified[key] = expected is not None
    return expected is not None


def load_state(path: str | Path, prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a checkpoint; with `prefixes`, only the top-level entries named there are read."""
    with safe_open(str(path), framework="pt") as f:
        tree = json.loads(f.metadata()[_TREE_KEY])
        if prefixes is not None:
            tree = {"__dict__": {k: v for k, v in tree["__dict__"].items() if k in prefixes}}
        return _unflatten(tree, f.get_tensor)  # reads only the tensors the (filtered) tree names


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `directory`, oldest first."""
    directory = Path(directory)
    found = []
    for p in directory.glob("step-*.safetensors"):
        m = _STEP_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | Path) -> tuple[int, Path] | None:
    """The newest checkpoint file by step, damaged or not (see `newest_good`)."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def newest_good(directory: str | Path) -> tuple[tuple[int, Path] | None, list[CheckpointDamaged]]:
    """((step, path) of the newest checkpoint that `verify` accepts, or None; the damaged ones newer than it)."""
    damaged = []
    for step, path in reversed(list_checkpoints(directory)):
        try:
            verify(path)
        except CheckpointDamaged as exc:
            damaged.append(exc)
            continue
        return (step, path), damaged
    return None, damaged


def remove_library_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files safetensors' ``save_file`` left in `directory` (`LIBRARY_TEMP_RE`). Their names say
    nothing of their writer, so call this only while holding the run's lock (no trainer is writing there)."""
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if LIBRARY_TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
