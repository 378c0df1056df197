"""Dataset `emoji`: Google's Noto emoji from the npm package ``emoji-datasource-google`` (16.x), captioned by name.

Files. The package's ``emoji.json`` (one object per emoji: its name, short names, category, subcategory, unified
code point sequence, image file and skin-tone variations) and ``img/google/64/*.png`` (64x64 RGBA). Looked for in
``[data] root`` when set: the unpacked package (the folder holding ``emoji.json``, or the ``package/`` folder's
parent as ``tar xzf`` of an ``npm pack`` tarball leaves it, or a folder with ``node_modules/``), or the ``.tgz`` that
``npm pack emoji-datasource-google@16`` writes, read in place with `tarfile` (only regular files are read, nothing is
extracted, and an archive with a member outside its folder is refused), or a folder holding that ``.tgz``. With no
root: ``./node_modules/emoji-datasource-google``, ``./emoji-datasource-google-*.tgz``, then npm's global folder
(``npm root -g``, asked only when npm is on PATH). Absent everywhere: one line with the command that fetches it.

Captions come from the package's own text: ``caption = "name"`` gives the lower-cased name ("grinning face"),
``"short_name"`` the first short name ("grinning"), ``"name+category"`` both ("grinning face, smileys &
emotion"). Skin-tone variants (off by default) add the Unicode skin-tone names ("father christmas: medium skin
tone"). Every image carries its category as the attribute ``category``, and `parse_caption` reads the category back
out of a prompt (an emoji's own caption or short name, or a prompt naming one category).

Pixels, split and cache: `dalle_kit_plugins.data.packaged` (background colour, area resize, a SHA-256 split by the
emoji's unified code, shared by its skin-tone variants, and the decoded images in the content cache under
``emoji/``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath
from collections.abc import Callable
from typing import Any, Literal

import attrs

import dalle_kit
from dalle_kit import UserError, hints, param
from dalle_kit.tools.cache import content_key, file_digest
from dalle_kit_plugins.data import packaged
from dalle_kit_plugins.data.imagefolder import error_text, fraction_ok

PACKAGE = "emoji-datasource-google"
MAJOR = "16"
IMAGES = "img/google/64"  # the 64x64 PNGs inside the package
NATIVE_SIZE = 64
TARBALL_GLOB = f"{PACKAGE}-*.tgz"
CACHE_FORMAT = 1  # bump when the decoding changes pixels or rows
#: Unicode's names (CLDR) of the five skin-tone modifiers, keyed as emoji.json's skin_variations are.
TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
_IMAGE_NAME = re.compile(r"[0-9a-f]+(-[0-9a-f]+)*\.png")
_npm_global: list[Path | None] = []  # `npm root -g`, asked once per process


def fetch_command() -> str:
    """The command, as it works here, that puts the package's tarball into the current folder."""
    pack = f"npm pack {PACKAGE}@{MAJOR}"
    return pack if shutil.which("npm") else f"{hints.apt_install('npm')} && {pack}"


def npm_global_root() -> Path | None:
    """npm's global node_modules folder (``npm root -g``, 10 s at most), or None without npm."""
    if not _npm_global:
        found = None
        npm = shutil.which("npm")
        if npm:
            try:
                done = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=10, check=False)
                if done.returncode == 0 and done.stdout.strip():
                    found = Path(done.stdout.strip().splitlines()[-1])
            except (OSError, subprocess.SubprocessError):
                pass
        _npm_global.append(found)
    return _npm_global[0]


def _version_key(path: Path) -> tuple:
    version = path.name[len(PACKAGE) + 1 : -len(".tgz")]
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.-]", version)), path.name


# ---------------------------------------------------------------------------------------- the package's files
@attrs.frozen
class Source:
    """Where the package is: an unpacked folder (the one holding emoji.json) or an npm-pack tarball."""

    path: Path
    tarball: bool

    def describe(self) -> str:
        return str(self.path)

    def fingerprint(self) -> dict[str, Any]:
        """What the decoded images depend on: the tarball's bytes, or emoji.json's bytes and each image's size and
        modification time."""
        if self.tarball:
            return {"tarball": file_digest(self.path)}
        images = self.path / IMAGES
        stats = sorted(
            f"{p.name}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in images.glob("*.png") if p.is_file()
        )
        return {"emoji.json": file_digest(self.path / "emoji.json"), "images": content_key({"stats": stats})}

    def index(self) -> bytes:
        """emoji.json's bytes."""
        if not self.tarball:
            return (self.path / "emoji.json").read_bytes()
        return self._scan(lambda rel: rel == "emoji.json", stop_early=True).get("emoji.json", b"")

    def images(self, names: set[str]) -> dict[str, bytes]:
        """{image file name: its bytes} for the names in `names` that the package holds."""
        if not self.tarball:
            return {n: (self.path / IMAGES / n).read_bytes() for n in names if (self.path / IMAGES / n).is_file()}
        prefix = IMAGES + "/"
        found = self._scan(lambda rel: rel.startswith(prefix) and rel[len(prefix) :] in names)
        return {rel[len(prefix) :]: data for rel, data in found.items()}

    def _scan(self, wanted: Callable[[str], bool], stop_early: bool = False) -> dict[str, bytes]:
        """{path inside package/: bytes} of the tarball's regular files that `wanted` accepts (read in place)."""
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    rel = _member_path(member.name, self.path)
                    if rel is not None and member.isreg() and wanted(rel):
                        stream = tar.extractfile(member)
                        found[rel] = stream.read() if stream is not None else b""
                        if stop_early:
                            break
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(
                f"emoji: cannot read {self.path} ({error_text(exc)}); fetch it again with `{fetch_command()}`"
            ) from None
        return found


def _member_path(name: str, archive: Path) -> str | None:
    """A tarball member's path inside ``package/`` (None for a member elsewhere); refuses one that escapes."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UserError(
            f"emoji: {archive} has a member outside its folder ({name!r}), which npm never writes; delete it and "
            f"fetch the package with `{fetch_command()}`"
        )
    parts = [p for p in path.parts if p != "."]
    if len(parts) < 2 or parts[0] != "package":
        return None
    return "/".join(parts[1:])


def _tarball_has_index(path: Path) -> bool:
    """Whether `path` is a tar archive with package/emoji.json as a regular file (read up to that member only)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if _member_path(member.name, path) == "emoji.json":
                    return member.isreg()
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def _folder_source(folder: Path) -> Source | None:
    for candidate in (folder, folder / "package", folder / "node_modules" / PACKAGE):
        if (candidate / "emoji.json").is_file():
            return Source(candidate, tarball=False)
    tarballs = sorted(folder.glob(TARBALL_GLOB), key=_version_key) if folder.is_dir() else []
    for tarball in reversed(tarballs):
        if tarball.is_file() and _tarball_has_index(tarball):
            return Source(tarball, tarball=True)
    return None


# ---------------------------------------------------------------------------------------- the rows
def rows_of(index: bytes, where: str, skin_tones: bool) -> list[dict[str, Any]]:
    """emoji.json -> one row per image wanted (sorted as the package sorts emoji): its key (the base emoji's unified
    code), texts, category and image file name."""
    try:
        entries = json.loads(index)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"emoji: {where} is not valid JSON ({error_text(exc)}); fetch the package again with `{fetch_command()}`"
        ) from None
    if not isinstance(entries, list):
        raise UserError(
            f"emoji: {where} is not {PACKAGE}'s emoji.json (a list of emoji); fetch it with `{fetch_command()}`"
        )
    rows = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry[k].strip() for k in ("unified", "name", "image", "category")
        ):
            raise UserError(
                f"emoji: {where}: entry {position} lacks a unified code, name, image or category; this is not "
                f"{PACKAGE}'s emoji.json, fetch it with `{fetch_command()}`"
            )
        short = [s for s in entry.get("short_names") or [] if isinstance(s, str) and s.strip()]
        order = entry.get("sort_order")
        base = {
            "key": entry["unified"].upper(),
            "name": " ".join(entry["name"].lower().split()),
            "short_names": short,
            "category": entry["category"],
            "subcategory": entry.get("subcategory") if isinstance(entry.get("subcategory"), str) else "",
            "order": order if isinstance(order, int) else 1 << 30,
        }
        rows.append({**base, "unified": base["key"], "tone": "", "image": entry["image"]})
        variations = entry.get("skin_variations")
        if skin_tones and isinstance(variations, dict):
            for tones, variant in sorted(variations.items()):
                if not isinstance(variant, dict) or not isinstance(variant.get("image"), str):
                    continue
                names = [TONES.get(t.upper()) for t in tones.split("-")]
                if not all(names):
                    continue
                unified = variant.get("unified") if isinstance(variant.get("unified"), str) else tones
                rows.append({**base, "unified": unified.upper(), "tone": ", ".join(names), "image": variant["image"]})
    rows.sort(key=lambda r: (r["order"], r["key"], r["tone"]))
    return rows


def caption_of(row: dict[str, Any], kind: str) -> str:
    if kind == "short_name" and row["short_names"]:
        text = " ".join(row["short_names"][0].replace("_", " ").split())
    else:
        text = row["name"]
    if kind == "name+category":
        text = f"{text}, {row['category'].lower()}"
    return f"{text}: {row['tone']}" if row["tone"] else text


# ---------------------------------------------------------------------------------------- the dataset
class Emoji(packaged.PackagedDataset):
    """Google's Noto emoji (npm emoji-datasource-google 16.x): colour images captioned by name, by category."""

    name = "emoji"

    @attrs.frozen
    class Config:
        root: str = param(
            "",
            f"the package: its .tgz (`npm pack {PACKAGE}@{MAJOR}`), its unpacked folder, or a folder holding either; "
            "empty: ./node_modules, ./*.tgz, then npm's global folder",
        )
        size: int = param(
            32,
            "image side in pixels (the 64x64 images are area-resized)",
            validator=packaged.size_between(8, NATIVE_SIZE, "the images are 64x64"),
        )
        caption: Literal["name", "short_name", "name+category"] = param(
            "name",
            "'name': 'grinning face'; 'short_name': 'grinning'; 'name+category': 'grinning face, smileys & emotion'",
            validator=attrs.validators.in_(("name", "short_name", "name+category")),
        )
        skin_tones: bool = param(False, "add the skin-tone variants, captioned with their tone")
        background: str = param(
            "white", "colour under the transparent pixels: a name or #rrggbb", validator=packaged.colour_validator
        )
        test_fraction: float = param(
            0.1, "share of the emoji in the test split, by a hash of each one's code", validator=fraction_ok
        )
        split_seed: int = param(0, "seed of the hash split: another seed, another partition")
        cache: bool = param(True, "keep the decoded images on disk (content-keyed) and memory-map them later")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._source: Source | None = None

    @classmethod
    def pin(cls, config: Any) -> Any:
        """An empty or relative ``root`` becomes the absolute path of the package found now (recorded in the new
        run's recipe), so that ``sample`` and ``eval`` read the same files from any folder; a package not found is
        left to `check`, which says how to fetch it."""
        if config.root and Path(config.root).expanduser().is_absolute():
            return config
        try:
            found = cls(config).locate()
        except UserError:
            return config
        return attrs.evolve(config, root=str(found.path.resolve()))

    @property
    def native_size(self) -> int:
        return NATIVE_SIZE

    # -------------------------------------------------------------- locating the package
    def locate(self) -> Source:
        if self._source is None:
            self._source = self._locate()
        return self._source

    def _locate(self) -> Source:
        fix = f"`{fetch_command()}`"
        if self.config.root:
            root = Path(self.config.root).expanduser()
            try:
                kind = (
                    "file"
                    if root.is_file()
                    else "folder"
                    if root.is_dir()
                    else "other"
                    if os.path.lexists(root)
                    else ""
                )
            except (OSError, ValueError) as exc:  # a name too long, a NUL byte
                raise UserError(
                    f"emoji: [data] root {str(root)[:80]!r} cannot be used ({error_text(exc)}); set it to the .tgz "
                    f"that {fix} writes or to the unpacked package"
                ) from None
            if kind == "file":
                if _tarball_has_index(root):
                    return Source(root, tarball=True)
                raise UserError(
                    f"emoji: [data] root {root} is not an npm tarball of {PACKAGE} (no package/emoji.json in it); "
                    f"fetch one with {fix} and point root at it"
                )
            if kind == "folder":
                found = _folder_source(root)
                if found is not None:
                    return found
                raise UserError(
                    f"emoji: [data] root {root} holds no emoji.json, package/emoji.json or {TARBALL_GLOB}; "
                    f"fetch the package with {fix} in that folder, or point root at the package"
                )
            raise UserError(
                f"emoji: [data] root {root} {'is not a file or folder' if kind else 'does not exist'}; fetch the "
                f"package with {fix} and set root to the .tgz it writes (or leave root empty to read it from the "
                "current folder)"
            )
        here = Path.cwd()
        found = _folder_source(here)
        if found is None:
            global_root = npm_global_root()
            if global_root is not None and (global_root / PACKAGE / "emoji.json").is_file():
                found = Source(global_root / PACKAGE, tarball=False)
        if found is not None:
            return found
        raise UserError(
            f"emoji: npm package {PACKAGE} not found (looked in ./node_modules, ./{TARBALL_GLOB} and npm's global "
            f"folder); fetch it into this folder with {fix} (74 MB) or set [data] root to its .tgz or unpacked folder"
        )

    def check(self) -> None:
        self.locate()

    # -------------------------------------------------------------- what the base class asks
    def where(self) -> str:
        return str(self.locate().path)

    def refetch(self) -> str:
        return fetch_command()

    def files_key(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "package": self.locate().fingerprint(), "skin_tones": self.config.skin_tones}

    def pictures(self) -> tuple[list[tuple[dict[str, Any], Callable[[], Any]]], dict[str, int]]:
        from PIL import Image

        source = self.locate()
        where = f"{source.path}{'!package' if source.tarball else ''}/emoji.json"
        rows = rows_of(source.index(), where, self.config.skin_tones)
        images = source.images({row["image"] for row in rows if _IMAGE_NAME.fullmatch(row["image"])})
        listed, missing = [], 0
        for row in rows:
            data = images.get(row["image"]) if _IMAGE_NAME.fullmatch(row["image"]) else None
            if data is None:
                missing += 1
            else:
                row = {k: v for k, v in row.items() if k != "order"}
                listed.append((row, lambda data=data: Image.open(io.BytesIO(data))))
        return listed, {"missing images": missing}

    def caption_of(self, row: dict[str, Any]) -> str:
        return caption_of(row, self.config.caption)

    def caption_texts(self, row: dict[str, Any]) -> list[str]:
        return [caption_of(row, "name"), caption_of(row, "name+category")] + [
            " ".join(s.replace("_", " ").split()) for s in row["short_names"]
        ]


@dalle_kit.hookimpl
def register_datasets(register):
    register(Emoji)
