"""Shared by the datasets read from another package's files (`emoji`, `tuxpaint`): pictures, a split, a cache.

Pixels. A picture with transparency is composited on a fixed background colour at its own size, then scaled so
that its longer side is ``size`` (area averaging, PIL's BOX filter: no ringing around hard edges) and centred on a
``size`` x ``size`` square of the same colour: the aspect ratio is kept, never stretched.

Split. Each picture has a split key (an emoji's code point sequence, a stamp's sentence); it goes to the test split
when a SHA-256 of the key and a seed (`dalle_kit_plugins.data.imagefolder.split_score`) falls below
``test_fraction``. Pictures that share a key (an emoji and its skin-tone variants, stamps with one sentence) share a
split. A split the hash leaves empty (a handful of pictures) is lent the key nearest the boundary.

Cache. The decoded pictures of a package are kept in the content cache as one raw uint8 ``images.npy`` [N, 3, S, S]
beside ``rows.json`` (one JSON object per picture: its key, texts and category) and ``info.json`` (what was left
out, and why), keyed by the caller's fields (the package's files and every setting that changes pixels). Later loads
memory-map the array; nothing in the entry is ever unpickled.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dalle_kit
from dalle_kit.tools.cache import ContentCache
from dalle_kit.files import atomic_write, atomic_write_text
from dalle_kit.tools.safe_load import npy
from dalle_kit_plugins.data.imagefolder import split_score

IMAGES_FILE, ROWS_FILE, INFO_FILE = "images.npy", "rows.json", "info.json"

Built = tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]


# ---------------------------------------------------------------------------------------- pixels
def colour(value: str) -> tuple[int, int, int]:
    """A colour name ("white") or hex code ("#f0f0f0") -> (r, g, b); ValueError when PIL does not know it."""
    from PIL import ImageColor

    rgb = ImageColor.getrgb(value)
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def colour_validator(_: Any, attribute: Any, value: str) -> None:
    """attrs validator: a colour PIL can read."""
    try:
        colour(value)
    except ValueError:
        raise ValueError(
            f'\'{attribute.name}\' must be a colour name ("white") or a hex code ("#f0f0f0"), got {value!r}'
        ) from None


def fit(image: Any, size: int, background: tuple[int, int, int]) -> np.ndarray:
    """A PIL image -> uint8 [3, size, size]: on `background`, longer side scaled to `size` (area), centred."""
    from PIL import Image

    rgba = image.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, background + (255,)), rgba).convert("RGB")
    width, height = rgb.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new != rgb.size:
        rgb = rgb.resize(new, Image.Resampling.BOX)
    square = Image.new("RGB", (size, size), background)
    square.paste(rgb, ((size - new[0]) // 2, (size - new[1]) // 2))
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------- split
def size_between(low: int, high: int, why: str = "") -> Callable[[Any, Any, int], None]:
    """attrs validator: an image side from `low` to `high` pixels (`why` says where the bound comes from)."""

    def check(_: Any, attribute: Any, value: int) -> None:
        if not low <= value <= high:
            note = f" ({why})" if why else ""
            raise ValueError(f"'{attribute.name}' must be between {low} and {high}{note}, got {value}")

    return check


def in_test_split(keys: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Per picture: in the test split? Decided by its key's hash alone, so neither file order nor the other
    pictures move it (except that an empty split is lent the one key nearest the boundary)."""
    scores = {key: split_score(key, seed) for key in keys}
    test = {key for key, score in scores.items() if score < fraction}
    if len(scores) >= 2 and not test:
        test = {min(scores, key=lambda k: (scores[k], k))}
    elif len(scores) >= 2 and len(test) == len(scores):
        test.discard(max(scores, key=lambda k: (scores[k], k)))
    return [key in test for key in keys]


# ---------------------------------------------------------------------------------------- captions
def normal_text(text: str) -> str:
    """Lower case, one space between words, no final full stop: how captions are matched to prompts."""
    return " ".join(text.lower().split()).rstrip(" .!")


class CategoryIndex:
    """Reads a category back out of a prompt: the category of the picture whose text it is, or the one category
    it names ("... smileys & emotion"); {} when it matches none or more than one."""

    def __init__(self, texts: Sequence[tuple[str, str]], categories: Sequence[str]):
        found: dict[str, set[str]] = {}
        for text, category in texts:
            found.setdefault(normal_text(text), set()).add(category)
        self.known = {text: next(iter(cats)) for text, cats in found.items() if len(cats) == 1}
        self.ambiguous = {text for text, cats in found.items() if len(cats) > 1}
        self.categories = {normal_text(c): c for c in categories}

    def parse(self, prompt: str) -> dict[str, str]:
        text = normal_text(prompt)
        if text in self.known:
            return {"category": self.known[text]}
        if text in self.ambiguous:
            return {}
        named = {c for n, c in self.categories.items() if re.search(rf"(^|\W){re.escape(n)}($|\W)", text)}
        return {"category": named.pop()} if len(named) == 1 else {}


# ---------------------------------------------------------------------------------------- telling
_said: set[str] = set()


def say_once(line: str) -> None:
    """Print `line` to stderr unless this process printed it already (a split loaded twice says it once)."""
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


# ---------------------------------------------------------------------------------------- cache
def _read(entry: Path, size: int) -> Built | None:
    try:
        rows = json.loads((entry / ROWS_FILE).read_text())
        info = json.loads((entry / INFO_FILE).read_text())
        images = npy(entry / IMAGES_FILE, mmap_mode="c")  # an object array (a pickle) raises ValueError
    except (OSError, ValueError):
        return None
    if (
        not isinstance(rows, list)
        or not all(isinstance(r, dict) for r in rows)
        or not isinstance(info, dict)
        or images.dtype != np.uint8
        or tuple(images.shape) != (len(rows), 3, size, size)
    ):
        return None
    return images, rows, info


def cached(namespace: str, fields: dict[str, Any], size: int, build: Callable[[], Built], use_cache: bool) -> Built:
    """(images uint8 [N, 3, size, size], rows, info): from the content cache when an entry for `fields` is complete,
    else `build()`, stored (array first, rows last) unless `use_cache` is false."""
    if not use_cache:
        return build()
    entry = ContentCache(namespace).entry(fields)
    found = _read(entry, size)
    if found is not None:
        return found
    images, rows, info = build()
    atomic_write(entry / IMAGES_FILE, lambda tmp: np.save(tmp, np.ascontiguousarray(images), allow_pickle=False))
    atomic_write_text(entry / INFO_FILE, json.dumps(info, sort_keys=True) + "\n")
    atomic_write_text(entry / ROWS_FILE, json.dumps(rows, ensure_ascii=False) + "\n")
    return images, rows, info


# ---------------------------------------------------------------------------------------- the datasets' base
class PackagedDataset(dalle_kit.Dataset):
    """Base of `emoji` and `tuxpaint`: decodes every picture once (both splits), caches them, splits by key.

    A subclass's Config has ``size``, ``background``, ``test_fraction``, ``split_seed`` and ``cache``; the subclass
    says where its files are (`where`), what the pictures depend on (`files_key`), lists them (`pictures`) and writes
    each row's caption (`caption_of`) and the texts that name it (`caption_texts`, for `parse_caption`). Each row
    is a JSON object with at least ``key`` (the split's hash key) and ``category``.
    """

    suggested_metrics = ("kid", "fid")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._built: Built | None = None
        self._index: CategoryIndex | None = None
        #: what could not be used, by reason (after a load)
        self.skipped: dict[str, int] = {}

    @property
    def image_size(self) -> int:
        return int(self.config.size)

    # -------------------------------------------------------------- what a subclass says
    def where(self) -> str:
        """The files read, for messages."""
        raise NotImplementedError

    def files_key(self) -> dict[str, Any]:
        """What the decoded pictures and rows depend on besides size and background (files, settings)."""
        raise NotImplementedError

    def pictures(self) -> tuple[list[tuple[dict[str, Any], Callable[[], Any]]], dict[str, int]]:
        """([(row, a function opening its PIL image)], {reason: count} of what is left out before decoding)."""
        raise NotImplementedError

    def refetch(self) -> str:
        """The command that gets a fresh copy of the files."""
        raise NotImplementedError

    def skip_note(self) -> str:
        """Said after the count of what was left out (a fix), or ""."""
        return ""

    def caption_of(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def caption_texts(self, row: dict[str, Any]) -> list[str]:
        """The texts that name this row's picture (its captions in every style)."""
        return [self.caption_of(row)]

    def split_key(self, row: dict[str, Any]) -> str:
        """What the train/test split hashes: pictures with the same key share a split (default: the row's key)."""
        return str(row["key"])

    # -------------------------------------------------------------- decoding and caching
    def _decode(self) -> Built:
        size, background = self.config.size, colour(self.config.background)
        listed, skipped = self.pictures()
        rows, arrays, unreadable = [], [], 0
        for row, open_image in listed:
            try:
                with open_image() as image:
                    arrays.append(fit(image, size, background))
            except Exception:  # a damaged PNG, an SVG the rasteriser refuses (PIL and CairoSVG raise many kinds)
                unreadable += 1
                continue
            rows.append(row)
        if not rows:
            raise dalle_kit.UserError(
                f"{self.name}: no usable image in {self.where()}; get a fresh copy with `{self.refetch()}`"
            )
        skipped = {**skipped, "unreadable": unreadable}
        return np.stack(arrays), rows, {"skipped": {k: v for k, v in skipped.items() if v}}

    def built(self) -> Built:
        """Every usable picture (both splits), its row and what was left out; decoded once, then from the cache."""
        if self._built is None:
            fields = {
                **self.files_key(),
                "size": self.config.size,
                "background": list(colour(self.config.background)),
            }
            self._built = cached(self.name, fields, self.config.size, self._decode, self.config.cache)
            self.skipped = {k: int(v) for k, v in self._built[2].get("skipped", {}).items()}
            if self.skipped:
                counts = ", ".join(
                    f"{n} {why}" for why, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
                )
                note = self.skip_note()
                say_once(
                    f"{self.name}: {len(self._built[1])} images from {self.where()}; left out {counts}"
                    + (f" ({note})" if note else "")
                )
        return self._built

    # -------------------------------------------------------------- splits and captions
    def categories(self) -> list[str]:
        return sorted({row["category"] for row in self.built()[1]})

    def load(self, split: str) -> dalle_kit.ImageCaptions:
        if split not in self.splits:
            raise dalle_kit.UserError(f"{self.name}: unknown split '{split}'; use 'train' or 'test'")
        images, rows, _ = self.built()
        test = in_test_split([self.split_key(r) for r in rows], self.config.test_fraction, self.config.split_seed)
        picked = [i for i, t in enumerate(test) if t == (split == "test")]
        if not picked:
            raise dalle_kit.UserError(
                f"{self.name}: the {split} split of {self.where()} is empty ({len(rows)} images in all); "
                "change [data] test_fraction"
            )
        categories = self.categories()
        return dalle_kit.ImageCaptions(
            torch.from_numpy(np.ascontiguousarray(images[picked])),
            [self.caption_of(rows[i]) for i in picked],
            attributes={"category": torch.tensor([categories.index(rows[i]["category"]) for i in picked])},
            attribute_names={"category": categories},
        )

    def parse_caption(self, text: str) -> dict[str, str]:
        """{"category": name} when `text` is one picture's caption (in any style), or names exactly one category."""
        if self._index is None:
            rows = self.built()[1]
            texts = [(t, r["category"]) for r in rows for t in self.caption_texts(r)]
            self._index = CategoryIndex(texts, self.categories())
        return self._index.parse(text)
