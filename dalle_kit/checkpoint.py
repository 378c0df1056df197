"""Checkpoints as safetensors files, written atomically (write to a temporary name, then rename).

A checkpoint is a nested dict whose leaves are tensors or JSON values (module and optimizer state
dicts, RNG states, counters). Tensors are stored flat under '/'-joined keys; the rest of the tree
is kept as JSON in the file's metadata, so nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_TREE_KEY = "dalle_kit.tree"
_STEP_RE = re.compile(r"step-(\d+)\.safetensors$")


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
        return {"__list__": [_flatten(v, f"{prefix}{i}/", tensors) for i, v in enumerate(node)], "tuple": isinstance(node, tuple)}
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


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={_TREE_KEY: json.dumps(tree)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    found = list_checkpoints(directory)
    return found[-1] if found else None
