"""Dataset `cifar10`: CIFAR-10 in torchvision's layout, captioned with its class name ("a photo of a cat").

The files, their MD5 sums and the download are torchvision's (``torchvision.datasets.CIFAR10``). The batches are
pickles, which torchvision loads with ``pickle.load`` (a crafted batch would run its code); dalle-kit reads them
itself through `dalle_kit.tools.safe_load.arrays_pickle`, which builds numpy arrays and plain values and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import numpy as np
import torch

import dalle_kit
from dalle_kit import ImageCaptions, param
from dalle_kit import download_reason
from dalle_kit.tools.safe_load import arrays_pickle

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"


def _torchvision():
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    return TorchvisionCIFAR10


class CIFAR10(dalle_kit.Dataset):
    """CIFAR-10 (32x32, 50k train / 10k test) in torchvision's layout, class-name captions."""

    name = "cifar10"
    suggested_metrics = ("fid", "kid")

    @attrs.frozen
    class Config:
        root: str = param("data/cifar10", "folder holding cifar-10-batches-py/ (or where to download it)")
        download: bool = param(True, "download the archive when it is missing and a network exists")
        verify: bool = param(True, "check the files' MD5 sums as torchvision does (off: only check they exist)")
        caption: str = param("a photo of a {}", "caption template; {} is the class name")

    @property
    def image_size(self) -> int:
        return 32

    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    # -------------------------------------------------------------- finding (and fetching) the files
    def _problem(self) -> str | None:
        """None when root holds every file (matching its MD5 sum with ``verify``), else what is wrong."""
        from torchvision.datasets.utils import check_integrity

        tv = _torchvision()
        files = [*tv.train_list, *tv.test_list, [tv.meta["filename"], tv.meta["md5"]]]
        for name, md5 in files:
            path = self.root / FOLDER / name
            if not path.is_file():
                return f"{path} not found"
            if not check_integrity(str(path), md5 if self.config.verify else None):
                return f"{path} does not match its MD5 sum"
        return None

    def _fetch(self) -> str | None:
        """Extract the archive in root, downloading it first (torchvision) when it is absent; None on success, else
        the reason. What a failed download created (root's folders, a partial archive) is removed again."""
        from torchvision.datasets.utils import download_and_extract_archive

        tv = _torchvision()
        created = next((p for p in (*reversed(self.root.parents), self.root) if not p.exists()), None)
        archive = self.root / ARCHIVE
        had_archive = archive.exists()
        try:
            download_and_extract_archive(tv.url, str(self.root), filename=tv.filename, md5=tv.tgz_md5)
        except Exception as exc:  # offline: URLError, OSError or RuntimeError after the download failed
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            elif not had_archive:
                archive.unlink(missing_ok=True)
            return f"download failed: {download_reason(exc)}"
        return None

    def check(self) -> None:
        """Refuse, in one line and before any run directory exists, a root that is a file or holds no usable data
        (downloaded first when ``download`` allows)."""
        if self.root.exists() and not self.root.is_dir():
            raise dalle_kit.UserError(
                f"cifar10: [data] root {self.root} is a file, not a folder; set [data] root to the "
                f"folder that holds {FOLDER}/"
            )
        problem = self._problem()
        if problem is None:
            return
        if self.config.download or (self.root / ARCHIVE).is_file():
            problem = self._fetch() or self._problem()
            if problem is None:
                return
        elif not self.config.download:
            problem += "; download = false"
        raise dalle_kit.UserError(
            f"cifar10: no usable data in {self.root} ({problem}); put {ARCHIVE} (CIFAR-10's python version) into {self.root}/ "
            f"or extract it there so that {self.root}/{FOLDER}/ exists, or set [data] root"
        )

    # -------------------------------------------------------------- reading
    def _read(self, name: str) -> dict:
        path = self.root / FOLDER / name
        entry = arrays_pickle(path, fix=f"replace {self.root / FOLDER}/ with the files of the official {ARCHIVE}")
        if not isinstance(entry, dict):
            raise dalle_kit.UserError(
                f"{path}: not a CIFAR-10 file (a {type(entry).__name__}, not a dict); replace it with "
                f"the official {ARCHIVE}'s"
            )
        return entry

    def load(self, split: str) -> ImageCaptions:
        if split not in self.splits:
            raise dalle_kit.UserError(f"cifar10: unknown split '{split}'; use 'train' or 'test'")
        self.check()
        tv = _torchvision()
        data, targets = [], []
        for name, _ in tv.train_list if split == "train" else tv.test_list:
            entry = self._read(name)
            images, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
            if (
                not isinstance(images, np.ndarray)
                or images.dtype != np.uint8
                or images.ndim != 2
                or images.shape[1] != 3 * 32 * 32
                or not isinstance(labels, list)
                or len(labels) != len(images)
                or not all(isinstance(t, int) and 0 <= t < 10 for t in labels)
            ):
                raise dalle_kit.UserError(
                    f"{self.root / FOLDER / name}: not a CIFAR-10 batch (uint8 data [N, 3072] and N "
                    f"labels 0-9); replace it with the official {ARCHIVE}'s"
                )
            data.append(images)
            targets.extend(labels)
        classes = self._read(tv.meta["filename"]).get(tv.meta["key"])
        if not isinstance(classes, list) or len(classes) != 10 or not all(isinstance(c, str) for c in classes):
            raise dalle_kit.UserError(
                f"{self.root / FOLDER / tv.meta['filename']}: not CIFAR-10's class names; replace "
                f"it with the official {ARCHIVE}'s"
            )
        images = torch.from_numpy(np.vstack(data).reshape(-1, 3, 32, 32)).contiguous()
        labels = torch.tensor(targets, dtype=torch.long)
        captions = [self.config.caption.format(classes[t]) for t in targets]
        return ImageCaptions(images, captions, attributes={"class": labels}, attribute_names={"class": classes})


@dalle_kit.hookimpl
def register_datasets(register):
    register(CIFAR10)
