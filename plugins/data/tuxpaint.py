"""Dataset `tuxpaint`: the stamps of Tux Paint (Debian ``tuxpaint-stamps-default``), captioned by their own text.

Files. ``/usr/share/tuxpaint/stamps/<category>/.../<name>.png`` or ``.svg`` (or ``[data] root``), each with a
``<name>.txt`` whose first line without a locale prefix is the English description ("A crowned crane."); the other
lines (``fr.utf8=Une grue royale.``) are translations. A stamp's alternate images (``<name>_mirror.png``,
``<name>_flip.png``) are not stamps of their own and are left out; so are its sounds and ``.dat`` options. A stamp
shipped both as PNG and SVG is read from its PNG. Stamps without an English description are left out and counted.

SVG. Stamps only shipped as SVG are rasterised with CairoSVG (the optional extra ``svg``; it needs the system's
cairo library) and otherwise left out and counted; the count and the command that adds the rasteriser are shown
once per process. CairoSVG is called without its ``unsafe`` option, so an SVG never reads another file or the
network.

The caption is the English description, or with ``caption = "text+category"`` the description followed by the
category in brackets ("A crowned crane. (animals)"). Every image carries its category (the first folder under root)
as the attribute ``category``, and `parse_caption` reads it back out of a prompt (a stamp's own description, or a
prompt naming one category).

Split. Several stamps share a sentence ("A flower.", "A zebra."); the train/test split hashes the sentence (lower
case, spaces collapsed, no final full stop), so such stamps share a split and no test caption is a train caption.
``split_by = "path"`` hashes each stamp's path instead, the split of runs made before ``split_by`` existed (add it to
such a run's ``[data]`` table to evaluate it on its own test split).

Pixels, split and cache: `dalle_kit_plugins.data.packaged` (background colour, longer side area-resized and padded
to a square, a SHA-256 split by the key above, the decoded images in the content cache under ``tuxpaint/``, keyed
by every file's path, size and modification time).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

import dalle_kit
from dalle_kit import UserError, hints, param
from dalle_kit.tools.cache import content_key
from dalle_kit_plugins.data import packaged
from dalle_kit_plugins.data.imagefolder import fraction_ok

DEBIAN_PACKAGE = "tuxpaint-stamps-default"
DEFAULT_ROOT = "/usr/share/tuxpaint/stamps"
EXTENSIONS = (".png", ".svg")
ALTERNATES = ("_mirror_flip", "_mirror", "_flip")  # Tux Paint's alternate images of a stamp
CACHE_FORMAT = 1  # bump when the decoding changes pixels or rows
#: a translation line: ``fr.utf8=...``, ``pt_BR.utf8=...``, ``sr@latin.utf8=...``
_LOCALE_LINE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2})?(@[A-Za-z]+)?\.utf-?8=", re.IGNORECASE)


def english_line(text: str) -> str:
    """The first line of a Tux Paint description file that has no locale prefix (white space tidied), or ""."""
    for line in text.splitlines():
        line = line.lstrip("\ufeff")
        if line.strip() and not _LOCALE_LINE.match(line.strip()):
            return " ".join(line.split())
    return ""


def svg_renderer() -> tuple[Callable[[bytes], Any] | None, str]:
    """(bytes -> PIL image, CairoSVG's version) when SVGs can be rasterised here, else (None, the fix command)."""
    try:
        import cairosvg
    except ImportError:
        return None, hints.install_extra("svg")
    except OSError:  # cairocffi found no libcairo
        return None, hints.apt_install("libcairo2")

    def render(data: bytes) -> Any:
        from PIL import Image

        return Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, unsafe=False)))

    return render, str(getattr(cairosvg, "__version__", "unknown"))


def _not_blank(_: Any, attribute: Any, value: str) -> None:
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must name a folder, got {value!r} (default: {DEFAULT_ROOT})")


class TuxPaint(packaged.PackagedDataset):
    """Tux Paint's stamps (Debian tuxpaint-stamps-default): photos and drawings with a one-line English caption."""

    name = "tuxpaint"

    @attrs.frozen
    class Config:
        root: str = param(
            DEFAULT_ROOT,
            "the stamps folder (<category>/.../<name>.png with <name>.txt)",
            path="dir",
            validator=_not_blank,
        )
        size: int = param(
            32,
            "image side in pixels: the longer side is area-resized to it, the rest padded",
            validator=packaged.size_between(8, 256),
        )
        caption: Literal["text", "text+category"] = param(
            "text",
            "'text': 'A crowned crane.'; 'text+category': 'A crowned crane. (animals)'",
            validator=attrs.validators.in_(("text", "text+category")),
        )
        svg: bool = param(
            True, "rasterise the stamps only shipped as SVG (needs the extra 'svg'); false: leave them out"
        )
        background: str = param(
            "white",
            "colour under the transparent pixels and the padding: a name or #rrggbb",
            validator=packaged.colour_validator,
        )
        test_fraction: float = param(
            0.1, "share of the stamps in the test split, by a hash of each one's sentence", validator=fraction_ok
        )
        split_seed: int = param(0, "seed of the hash split: another seed, another partition")
        split_by: Literal["caption", "path"] = param(
            "caption",
            "'caption': stamps that share a sentence share a split (no test caption is a train caption); 'path': "
            "each stamp's path (the split before this setting existed, where a test caption can also caption a "
            "train stamp)",
            validator=attrs.validators.in_(("caption", "path")),
        )
        cache: bool = param(True, "keep the decoded images on disk (content-keyed) and memory-map them later")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._planned: tuple[list[tuple[str, Path, str]], dict[str, int]] | None = None

    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    # -------------------------------------------------------------- finding the stamps
    def stamps(self) -> list[tuple[str, Path]]:
        """(key, image file) of every stamp under root, by key: the path relative to root without extension; the PNG
        when a stamp has both; alternate images left out."""
        root = self.root
        files: dict[str, dict[str, Path]] = {}
        if root.is_dir():
            for path in root.rglob("*"):
                suffix = path.suffix.lower()
                if (
                    suffix in EXTENSIONS
                    and path.is_file()
                    and not any(p.startswith(".") for p in path.relative_to(root).parts)
                ):
                    files.setdefault(path.relative_to(root).with_suffix("").as_posix(), {})[suffix] = path
        stamps = []
        for key, found in files.items():
            alternate_of = next((key[: -len(a)] for a in ALTERNATES if key.endswith(a)), None)
            if alternate_of is not None and alternate_of in files:
                continue
            stamps.append((key, found.get(".png") or found[".svg"]))
        return sorted(stamps)

    def check(self) -> None:
        root = self.root
        if not root.is_dir() or not any(p.suffix.lower() in EXTENSIONS for p in root.rglob("*")):
            where = "is not installed" if str(root) == DEFAULT_ROOT else f"is not in {root}"
            raise UserError(
                f"tuxpaint: no stamps in {root} (the Debian package {DEBIAN_PACKAGE} {where}); install it with "
                f"`{hints.apt_install(DEBIAN_PACKAGE)}`, or set [data] root to a folder of Tux Paint stamps"
            )

    # -------------------------------------------------------------- what the base class asks
    def where(self) -> str:
        return str(self.root)

    def refetch(self) -> str:
        return hints.apt_install(DEBIAN_PACKAGE)

    def _plan(self) -> tuple[list[tuple[str, Path, str]], dict[str, int]]:
        """(key, image, caption) of the stamps to decode and the counts of those left out."""
        if self._planned is None:
            self.check()
            renderer = self._renderer()[0]
            plan, skipped = [], {"without a caption": 0, "SVG not rasterised": 0}
            for key, image in self.stamps():
                text_file = image.with_suffix(".txt")
                caption = english_line(text_file.read_text("utf-8", errors="replace")) if text_file.is_file() else ""
                if not caption:
                    skipped["without a caption"] += 1
                elif image.suffix.lower() == ".svg" and renderer is None:
                    skipped["SVG not rasterised"] += 1
                else:
                    plan.append((key, image, caption))
            self._planned = plan, skipped
        return self._planned

    def _renderer(self) -> tuple[Callable[[bytes], Any] | None, str]:
        return svg_renderer() if self.config.svg else (None, "svg = false")

    def files_key(self) -> dict[str, Any]:
        plan, _ = self._plan()
        stats = []
        for _, image, _ in plan:
            for path in (image, image.with_suffix(".txt")):
                st = path.stat()
                stats.append(f"{path.relative_to(self.root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
        renderer, version = self._renderer()
        return {"format": CACHE_FORMAT, "files": content_key({"stats": stats}), "svg": version if renderer else None}

    def pictures(self) -> tuple[list[tuple[dict[str, Any], Callable[[], Any]]], dict[str, int]]:
        from PIL import Image

        plan, skipped = self._plan()
        render = self._renderer()[0]
        listed = []
        for key, image, caption in plan:
            category = key.split("/")[0] if "/" in key else "uncategorised"
            row = {"key": key, "file": image.name, "caption": caption, "category": category}
            if image.suffix.lower() == ".svg" and render is not None:
                listed.append((row, lambda image=image, render=render: render(image.read_bytes())))
            else:
                listed.append((row, lambda image=image: Image.open(image)))
        return listed, skipped

    def skip_note(self) -> str:
        renderer, fix = self._renderer()
        if self.skipped.get("SVG not rasterised") and renderer is None and self.config.svg:
            return f"add an SVG rasteriser: `{fix}`"
        return ""

    def caption_of(self, row: dict[str, Any]) -> str:
        return f"{row['caption']} ({row['category']})" if self.config.caption == "text+category" else row["caption"]

    def caption_texts(self, row: dict[str, Any]) -> list[str]:
        return [row["caption"], f"{row['caption']} ({row['category']})"]

    def split_key(self, row: dict[str, Any]) -> str:
        return packaged.normal_text(row["caption"]) if self.config.split_by == "caption" else str(row["key"])


@dalle_kit.hookimpl
def register_datasets(register):
    register(TuxPaint)
