"""A content-keyed cache on disk, for things that are slow to compute and fully determined by their inputs.

An entry is a directory ``<root>/<namespace>/<key>/`` where ``key`` is a hash of the fields that
determine the content: for reference statistics the dataset, split, image size, number of images,
extractor, weights hash and a hash of the images' bytes; for a probe classifier the dataset config
and the probe's hyper-parameters. The fields are also written to ``manifest.json`` in the entry and
checked on every lookup. Changing any input changes the key, so a stale entry is never found, let
alone reused; entries whose manifest does not match are ignored.

The root is ``$DALLE_KIT_CACHE`` if set, else ``$XDG_CACHE_HOME/dalle-kit`` (``~/.cache/dalle-kit``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write_text, make_folder

if TYPE_CHECKING:
    import torch

CACHE_ENV = "DALLE_KIT_CACHE"
MANIFEST = "manifest.json"


def default_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dalle-kit"


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (hex)."""
    import torch

    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_file_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), remembered per (path, size, mtime) for this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _file_digests[key] = h.hexdigest()
    return _file_digests[key]


def content_key(fields: dict[str, Any]) -> str:
    """A short stable hash of JSON-able fields (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ContentCache:
    """Entries under ``root/namespace``, each a directory named by the hash of its fields."""

    def __init__(self, namespace: str, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.dir = self.root / namespace

    def entry(self, fields: dict[str, Any]) -> Path:
        """The directory of the entry for `fields` (created, with its manifest, if absent)."""
        fields = json.loads(json.dumps(fields, sort_keys=True, default=str))
        path = self.dir / content_key(fields)
        manifest = path / MANIFEST
        if manifest.is_file():
            try:
                if json.loads(manifest.read_text()) == fields:
                    return path
            except json.JSONDecodeError:
                pass
            # A manifest that does not describe these fields: the entry cannot be trusted; start it over.
            for child in path.iterdir():
                if child.is_file():
                    child.unlink()
        make_folder(path)
        atomic_write_text(manifest, json.dumps(fields, indent=2, sort_keys=True) + "\n")
        return path

    def load_module(self, entry: Path, module: torch.nn.Module, weights_file: str, info_file: str) -> dict | None:
        """Load the weights ``entry/weights_file`` (safetensors) into `module` and return ``entry/info_file`` (JSON)
        with the weights' sha256 as ``weights_hash``; None when the entry is incomplete, damaged, planted (a pickle
        is never unpickled: `dalle_kit.tools.safe_load`) or does not fit `module`: the caller computes it again."""
        from .safe_load import cached_tensors

        weights = cached_tensors(entry / weights_file)
        if weights is None or not (entry / info_file).is_file():
            return None
        try:
            module.load_state_dict(weights)
            info = json.loads((entry / info_file).read_text())
        except (RuntimeError, ValueError, OSError):  # weights or info that do not fit: the entry is not trusted
            return None
        info["weights_hash"] = file_digest(entry / weights_file)
        return info

    def entries(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*") if (p / MANIFEST).is_file()) if self.dir.is_dir() else []
