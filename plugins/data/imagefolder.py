"""Dataset `imagefolder`: a user's own folder of captioned images (PNG, JPEG, WebP; also BMP and GIF).

Layout. If ``root`` holds both a ``train/`` and a ``test/`` folder, those are the splits, each read on
its own with its own captions source. Otherwise every image under ``root`` (searched recursively;
names starting with "." are ignored) goes to the test split when a hash of its path relative to
``root`` (and ``split_seed``) falls below ``test_fraction``, else to train: a file's split depends on
nothing but its own path, so adding files never moves the others.

Captions, the first source that exists at the top of the folder (or of each split folder):
``metadata.jsonl`` (one JSON object a line with ``file_name`` and ``text``, the Hugging Face imagefolder
convention; file_name relative to the folder holding metadata.jsonl), ``captions.csv`` (a header with
``file_name,text``), or a ``.txt`` file beside each image with the same stem (``cat.png`` -> ``cat.txt``).

Pixels. Each image is upright by its EXIF orientation, composited on white where it has transparency,
converted to RGB (``channels = 3``, grey replicated) or luma (``channels = 1``), its shorter side resized
to ``size`` (Lanczos) and centre-cropped to ``size`` x ``size``.

Cache. Decoded images are kept in the content cache (``$DALLE_KIT_CACHE/imagefolder/<key>/images.npy``,
raw uint8 [N, C, size, size]) keyed by the split's relative paths, file sizes and modification times
and by ``size`` and ``channels``. A second load memory-maps that file (the OS pages it in, so a folder
larger than memory works) and decodes nothing. Captions are not part of the key: they are read from
their source on every load, so editing a caption never re-decodes and is never stale.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Literal, NamedTuple

import attrs
import numpy as np
import torch

import dalle_kit
from dalle_kit import ImageCaptions, UserError, param
from dalle_kit.tools.cache import ContentCache
from dalle_kit.files import atomic_write, atomic_write_text
from dalle_kit.tools.safe_load import npy

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
METADATA, CSV_FILE = "metadata.jsonl", "captions.csv"
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
CACHE_FORMAT = 1  # bump when the decoding changes pixels
IMAGES_FILE, META_FILE = "images.npy", "meta.json"
BATCH = 32

# reason -> (singular, plural) for the skip summary
REASONS = {
    "unreadable": ("unreadable image", "unreadable images"),
    "no_caption": ("image without caption", "images without caption"),
    "empty_caption": ("empty caption", "empty captions"),
    "no_image": ("caption without image", "captions without image"),
    "malformed": ("malformed caption line", "malformed caption lines"),
}


class Item(NamedTuple):
    rel: str  # path relative to root, posix
    path: Path
    caption: str


class Problem(NamedTuple):
    reason: str  # a key of REASONS
    rel: str | None  # the image it concerns, relative to root (None: a line naming no usable file)
    where: str  # short: the file relative to root, or "metadata.jsonl line 3"
    message: str  # the whole one-line error, with the fix
    line: int = 0  # its line in the captions file (0: none), for reporting in file order


def error_text(exc: BaseException) -> str:
    """An exception's message on one line (its whitespace collapsed), or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _tidy(text: str) -> str:
    return " ".join(text.split())


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def split_score(rel: str, seed: int) -> float:
    """A number in [0, 1) fixed by a file's relative path and the seed; test split when below test_fraction."""
    digest = hashlib.sha256(f"{seed}\0{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def fraction_ok(instance, attribute, value):
    """attrs validator: a share strictly between 0 and 1 (``test_fraction``)."""
    if not 0 < value < 1:
        raise ValueError(f"'{attribute.name}' must lie strictly between 0 and 1, got {value}")


def decode(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 [channels, size, size]: upright, alpha on white, shorter side resized, centre crop."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB" if channels == 3 else "L", (2 * size, 2 * size))  # DCT scaling: fast, stays >= 2x size
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits, do not clip
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        elif im.mode == "F":
            im = Image.fromarray(np.clip(np.asarray(im) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "La", "RGBa"):
            im = im.convert("RGBA")
        if im.mode == "RGBA":
            canvas = Image.new("RGBA", im.size, BACKGROUND + (255,))
            im = Image.alpha_composite(canvas, im)
        im = im.convert("RGB" if channels == 3 else "L")
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
        arr = np.asarray(im, dtype=np.uint8)
    return arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]


def _cpus() -> int:
    """CPUs this process may use: more decoding workers than that only add processes (and torch's warning)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Files(torch.utils.data.Dataset):
    """File paths -> (index, decoded image or None, error or None); errors come back as text, never raised."""

    def __init__(self, paths: list[str], size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, decode(self.paths[i], self.size, self.channels), None
        except Exception as exc:  # a corrupt, truncated or unsupported file: reported by the caller
            return i, None, error_text(exc)


def _collate(batch):
    return batch


class ImageFolder(dalle_kit.Dataset):
    """Your own folder of captioned images (metadata.jsonl, captions.csv or .txt sidecars); cached decoded on disk."""

    name = "imagefolder"
    suggested_metrics = ("fid", "kid")

    @attrs.frozen
    class Config:
        root: str = param(
            doc="folder of images (PNG, JPEG, WebP; searched recursively), or one with train/ and test/ folders",
            path="dir",
        )
        size: int = param(
            32,
            "image side in pixels: the shorter side is resized to it, then centre-cropped",
            validator=attrs.validators.ge(8),
        )
        channels: int = param(
            3,
            "3: RGB (grey images replicated); 1: greyscale (luma). Transparency is composited on white",
            validator=attrs.validators.in_((1, 3)),
        )
        test_fraction: float = param(
            0.1,
            "share of the images in the test split (without train/ and test/ folders), by a hash of each path",
            validator=fraction_ok,
        )
        split_seed: int = param(0, "seed of the hash split: another seed, another train/test partition")
        on_error: Literal["error", "skip"] = param(
            "error",
            "'error': stop at the first bad file or caption; 'skip': leave it out and count it",
            validator=attrs.validators.in_(("error", "skip")),
        )
        caption_column: str = param("text", "the key (metadata.jsonl) or column (captions.csv) that holds the caption")
        workers: int = param(
            4, "DataLoader worker processes decoding the images (0: in this process)", validator=attrs.validators.ge(0)
        )
        cache: bool = param(True, "keep the decoded images on disk (content-keyed) and memory-map them on later loads")

    def __init__(self, config):
        super().__init__(config)
        self._scan: tuple[dict[str, list[Item]], list[Problem], dict[str, list[Problem]]] | None = None
        #: per split: what on_error = "skip" left out, as (file relative to root or "captions file line N", reason, message)
        self.skipped: dict[str, list[tuple[str, str, str]]] = {}

    @property
    def image_size(self) -> int:
        return self.config.size

    @property
    def channels(self) -> int:
        return self.config.channels

    # ------------------------------------------------------------------ reading the folder
    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    def scan(self) -> tuple[dict[str, list[Item]], list[Problem], dict[str, list[Problem]]]:
        """(items per split, every problem in folder order, problems per split); read once per instance."""
        if self._scan is None:
            self._scan = self._read()
        return self._scan

    def _read(self):
        root = self.root
        if not root.is_dir():
            raise UserError(f"imagefolder: root {root} is not a folder; point [data] root at your folder of images")
        split_dirs = {"train": root / "train", "test": root / "test"}
        problems: list[Problem] = []
        if all(d.is_dir() for d in split_dirs.values()):
            items = {}
            by_split: dict[str, list[Problem]] = {}
            for split, folder in split_dirs.items():
                found, found_problems = self._read_folder(folder, root)
                items[split] = found
                by_split[split] = found_problems
                problems += found_problems
            return items, problems, by_split
        found, problems = self._read_folder(root, root)
        seed, fraction = self.config.split_seed, self.config.test_fraction
        scores = {item.rel: split_score(item.rel, seed) for item in found}
        items = {
            "train": [i for i in found if scores[i.rel] >= fraction],
            "test": [i for i in found if scores[i.rel] < fraction],
        }
        # A tiny folder may hash no file into one split: lend it the file nearest the boundary.
        if len(found) >= 2 and not items["test"]:
            nearest = min(items["train"], key=lambda i: scores[i.rel])
            items = {"train": [i for i in items["train"] if i is not nearest], "test": [nearest]}
        elif len(found) >= 2 and not items["train"]:
            nearest = max(items["test"], key=lambda i: scores[i.rel])
            items = {"train": [nearest], "test": [i for i in items["test"] if i is not nearest]}
        by_split = {"train": [], "test": []}
        for p in problems:
            by_split["test" if p.rel is not None and split_score(p.rel, seed) < fraction else "train"].append(p)
        return items, problems, by_split

    def _read_folder(self, folder: Path, root: Path) -> tuple[list[Item], list[Problem]]:
        """The captioned images under `folder` and the problems found (paths relative to `root`)."""
        images = sorted(
            (
                p
                for p in folder.rglob("*")
                if p.suffix.lower() in EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                and p.is_file()
            ),
            key=lambda p: _rel(p, folder),
        )
        if not images:
            raise UserError(
                f"imagefolder: no images ({', '.join(EXTENSIONS)}) in {folder}; put your images there "
                "or point [data] root at the folder that holds them"
            )
        if (folder / METADATA).is_file():
            source: Path | None = folder / METADATA
            captions, problems = self._read_jsonl(source, folder, root)
        elif (folder / CSV_FILE).is_file():
            source = folder / CSV_FILE
            captions, problems = self._read_csv(source, folder, root)
        else:
            source = None
            captions, problems = self._read_sidecars(images, folder, root)
        skip_hint = ' (or set on_error = "skip")'
        image_names = {_rel(path, folder) for path in images}
        for rel_here, (_, short, where, line) in captions.items():  # named by the source, but no such image
            if rel_here in image_names:
                continue
            target = folder / rel_here
            what = (
                f"{target} is not an image of a supported type ({', '.join(EXTENSIONS)}); convert it or remove the line"
                if target.is_file()
                else f"no image {target}; fix the file_name, add the image or remove the line"
            )
            problems.append(
                Problem("no_image", _rel(target, root), short, f"imagefolder: {where}: {what}{skip_hint}", line)
            )
        problems.sort(key=lambda p: p.line)  # the captions file's problems in its order
        items = []
        for path in images:
            rel_here, rel = _rel(path, folder), _rel(path, root)
            found = captions.pop(rel_here, None)
            if found is None:
                fix = (
                    f"add a line for {rel_here} to {source} or remove the image"
                    if source
                    else f"write its caption into {path.with_suffix('.txt')} or remove the image"
                )
                problems.append(
                    Problem("no_caption", rel, rel, f"imagefolder: {path} has no caption; {fix}{skip_hint}")
                )
            elif not found[0]:
                problems.append(
                    Problem(
                        "empty_caption",
                        rel,
                        found[1],
                        f"imagefolder: {found[2]}: the caption of {path} is empty; write one{skip_hint}",
                    )
                )
            else:
                items.append(Item(rel, path, found[0]))
        if source is None and not items and all(p.reason == "no_caption" for p in problems):
            raise UserError(
                f"imagefolder: no captions in {folder}: add {METADATA} (lines like "
                '{"file_name": "a.png", "text": "a red circle"}), '
                f"{CSV_FILE} (header file_name,text) "
                "or a .txt file beside each image (same name, .txt)"
            )
        return items, problems

    @staticmethod
    def _normal_name(name: str) -> str | None:
        """file_name as a posix path relative to its folder, or None if it leaves the folder or is absolute."""
        path = Path(name.strip().replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            return None
        return path.as_posix()

    def _add_caption(
        self, captions, problems, name: str, text: str, line: int, source: Path, folder: Path, root: Path
    ) -> None:
        short, where = f"{_rel(source, root)} line {line}", f"{source} line {line}"
        rel_here = self._normal_name(name)
        if rel_here is None:
            problems.append(
                Problem(
                    "malformed",
                    None,
                    short,
                    f"imagefolder: {where}: file_name '{name}' is not a path inside "
                    f"{folder}; write it relative to the folder holding {source.name}",
                    line,
                )
            )
        elif rel_here in captions:
            problems.append(
                Problem(
                    "malformed",
                    _rel(folder / rel_here, root),
                    short,
                    f"imagefolder: {where}: {rel_here} already has a caption ({captions[rel_here][2]}); "
                    "keep one line per image",
                    line,
                )
            )
        else:
            captions[rel_here] = (_tidy(text), short, where, line)

    def _read_jsonl(self, path: Path, folder: Path, root: Path):
        key = self.config.caption_column
        captions: dict[str, tuple[str, str, str, int]] = {}
        problems: list[Problem] = []
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"imagefolder: cannot read {path} ({error_text(exc)}); save it as UTF-8 text") from None
        example = f'{{"file_name": "a.png", "{key}": "a red circle"}}'
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            short, where = f"{_rel(path, root)} line {number}", f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(
                    Problem(
                        "malformed",
                        None,
                        short,
                        f"imagefolder: {where}: not valid JSON ({exc.msg}); write one object per line, like {example}",
                        number,
                    )
                )
                continue
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("file_name"), str)
                or not isinstance(row.get(key), str)
            ):
                hint = (
                    " (or set caption_column to the key that holds the captions)"
                    if isinstance(row, dict) and "file_name" in row
                    else ""
                )
                problems.append(
                    Problem(
                        "malformed",
                        None,
                        short,
                        f'imagefolder: {where}: needs the string keys "file_name" and '
                        f'"{key}"; write it like {example}{hint}',
                        number,
                    )
                )
                continue
            self._add_caption(captions, problems, row["file_name"], row[key], number, path, folder, root)
        return captions, problems

    def _read_csv(self, path: Path, folder: Path, root: Path):
        key = self.config.caption_column
        captions: dict[str, tuple[str, str, str, int]] = {}
        problems: list[Problem] = []
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in reader.fieldnames or []]
                reader.fieldnames = header
                missing = [c for c in ("file_name", key) if c not in header]
                if missing:
                    raise UserError(
                        f"imagefolder: {path} line 1: the header ({','.join(header) or 'empty file'}) lacks "
                        f"{' and '.join(missing)}; make the first line file_name,{key}"
                    )
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        raise UserError(
                            f"imagefolder: {path} line {reader.line_num}: {error_text(exc)}; fix the CSV quoting"
                        ) from None
                    number = reader.line_num
                    if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                        continue  # a blank line
                    if row.get("file_name") is None or row.get(key) is None or not row["file_name"].strip():
                        problems.append(
                            Problem(
                                "malformed",
                                None,
                                f"{_rel(path, root)} line {number}",
                                f"imagefolder: {path} line {number}: needs a file_name and a {key} value; "
                                'write it like a.png,"a red circle"',
                                number,
                            )
                        )
                        continue
                    self._add_caption(captions, problems, row["file_name"], row[key], number, path, folder, root)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"imagefolder: cannot read {path} ({error_text(exc)}); save it as UTF-8 text") from None
        return captions, problems

    @staticmethod
    def _read_sidecars(images: list[Path], folder: Path, root: Path):
        captions: dict[str, tuple[str, str, str, int]] = {}
        for image in images:
            txt = image.with_suffix(".txt")
            if not txt.is_file():
                continue
            try:
                text = txt.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"imagefolder: cannot read {txt} ({error_text(exc)}); save it as UTF-8 text") from None
            captions[_rel(image, folder)] = (_tidy(text), _rel(txt, root), str(txt), 0)
        return captions, []

    # ------------------------------------------------------------------ loading a split
    def load(self, split: str) -> ImageCaptions:
        if split not in self.splits:
            raise UserError(f"imagefolder: unknown split '{split}'; use 'train' or 'test'")
        items_by_split, problems, by_split = self.scan()
        skip = self.config.on_error == "skip"
        if problems and not skip:
            raise UserError(problems[0].message)
        items = items_by_split[split]
        if not items:
            raise UserError(
                f"imagefolder: the {split} split of {self.root} has no usable images; add captioned images"
                + (f" to {self.root / split}" if (self.root / split).is_dir() else "")
            )
        images, failed = self._pixels(items)
        if failed and not skip:
            raise UserError(failed[0][1])
        failed_rels = {rel for rel, _ in failed}
        kept = [item for item in items if item.rel not in failed_rels]
        if not kept:
            first = failed[0][1].removeprefix("imagefolder: ")
            raise UserError(f"imagefolder: no image of the {split} split of {self.root} could be read; first: {first}")
        skipped = [(p.where, p.reason, p.message) for p in by_split[split]] + [
            (rel, "unreadable", msg) for rel, msg in failed
        ]
        self.skipped[split] = skipped
        if skipped:
            print(self.skip_summary(split), file=sys.stderr)
        return ImageCaptions(images, [item.caption for item in kept])

    def skip_summary(self, split: str) -> str:
        """One line: how many files of `split` were left out and why, and which (after `load(split)`)."""
        skipped = self.skipped.get(split, [])
        counts = Counter(reason for _, reason, _ in skipped)
        parts = ", ".join(f"{n} {REASONS[r][0] if n == 1 else REASONS[r][1]}" for r, n in counts.most_common())
        names = ", ".join(where for where, _, _ in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        return f"imagefolder: {split}: skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} ({parts}): {names}"

    def cache_fields(self, items: list[Item]) -> dict:
        """What the decoded pixels of `items` depend on: the files (relative path, size, mtime) and the settings."""
        h = hashlib.sha256()
        for item in items:
            st = item.path.stat()
            h.update(f"{item.rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return {
            "format": CACHE_FORMAT,
            "n": len(items),
            "files": h.hexdigest(),
            "size": self.config.size,
            "channels": self.config.channels,
        }

    def _pixels(self, items: list[Item]) -> tuple[torch.Tensor, list[tuple[str, str]]]:
        """uint8 [kept, C, S, S] (kept = items less the failed, in order) and the failed (rel, message)."""
        if not self.config.cache:
            out = np.empty((len(items), self.channels, self.image_size, self.image_size), dtype=np.uint8)
            failed = self._decode_into(out, items)
            return torch.from_numpy(out[: len(items) - len(failed)]), failed
        entry = ContentCache("imagefolder").entry(self.cache_fields(items))
        meta = self._read_meta(entry, len(items))
        if meta is None:
            meta = self._decode_to_cache(entry, items)
        failed = [(rel, msg) for rel, msg in meta["failed"]]
        array = npy(entry / IMAGES_FILE, mmap_mode="c")[: meta["rows"]]  # copy-on-write: writable, never written back
        return torch.from_numpy(array), failed

    def _read_meta(self, entry: Path, n: int) -> dict | None:
        try:
            meta = json.loads((entry / META_FILE).read_text())
            header = npy(
                entry / IMAGES_FILE, mmap_mode="r"
            )  # an object array (a pickle) raises ValueError: decoded again
        except (OSError, ValueError):
            return None
        expected = (n, self.channels, self.image_size, self.image_size)
        if (
            tuple(header.shape) != expected
            or header.dtype != np.uint8
            or meta.get("rows", -1) + len(meta.get("failed", [])) != n
        ):
            return None
        return meta

    def _decode_to_cache(self, entry: Path, items: list[Item]) -> dict:
        shape = (len(items), self.channels, self.image_size, self.image_size)
        failed: list[tuple[str, str]] = []

        def decode(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            failed.extend(self._decode_into(out, items))
            out.flush()
            del out

        atomic_write(entry / IMAGES_FILE, decode)
        meta = {"rows": len(items) - len(failed), "failed": failed}
        atomic_write_text(entry / META_FILE, json.dumps(meta) + "\n")
        return meta

    def _decode_into(self, out: np.ndarray, items: list[Item]) -> list[tuple[str, str]]:
        """Decode `items` through a DataLoader into `out`, failed ones left out (rows packed in order).

        Returns the failed files as (rel, message); with on_error = "error" raises at the first one instead.
        """
        from tqdm import tqdm

        files = _Files([str(item.path) for item in items], self.image_size, self.channels)
        batches = math.ceil(len(items) / BATCH)
        loader = torch.utils.data.DataLoader(
            files,
            batch_size=BATCH,
            shuffle=False,
            collate_fn=_collate,
            num_workers=min(self.config.workers, batches, _cpus()),
        )
        failed: list[tuple[str, str]] = []
        bar = tqdm(
            total=len(items),
            desc=f"imagefolder: decoding {self.root}",
            unit="img",
            disable=None,
            file=sys.stderr,
            leave=False,
            mininterval=1.0,
        )
        try:
            for batch in loader:
                for i, image, error in batch:
                    if error is not None:
                        message = (
                            f"imagefolder: cannot read image {items[i].path} ({error}); replace or remove the file "
                            '(or set on_error = "skip")'
                        )
                        if self.config.on_error != "skip":
                            raise UserError(message)
                        failed.append((items[i].rel, message))
                    else:
                        out[i - len(failed)] = image
                bar.update(len(batch))
        finally:
            bar.close()
        return failed


@dalle_kit.hookimpl
def register_datasets(register):
    register(ImageFolder)
