"""Dataset `cifar10`: CIFAR-10 through torchvision, captioned with its class name ("a photo of a cat")."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch

import dalle_kit
from dalle_kit import ImageCaptions, param
from dalle_kit.errors import download_reason

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"


class CIFAR10(dalle_kit.Dataset):
    """CIFAR-10 (32x32, 50k train / 10k test) via torchvision.datasets.CIFAR10, class-name captions."""

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

    def check(self) -> None:
        """The data is on disk (or was just extracted or downloaded into [data] root): else one line saying where
        to put which file."""
        self._torchvision("test")

    def load(self, split: str) -> ImageCaptions:
        if split not in self.splits:
            raise dalle_kit.UserError(f"cifar10: unknown split '{split}'; use 'train' or 'test'")
        ds = self._torchvision(split)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        targets = torch.tensor(ds.targets, dtype=torch.long)
        captions = [self.config.caption.format(ds.classes[t]) for t in ds.targets]
        return ImageCaptions(images, captions, attributes={"class": targets}, attribute_names={"class": ds.classes})

    def _torchvision(self, split: str):
        """torchvision's dataset for `split`: it finds the batches, extracts the archive or downloads it."""
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        cls = TorchvisionCIFAR10 if self.config.verify else _unverified(TorchvisionCIFAR10)
        root = Path(self.config.root)
        try:
            return cls(str(root), train=split == "train", download=self.config.download)
        except Exception as exc:  # offline download errors come as URLError, OSError or RuntimeError
            raise dalle_kit.UserError(f"cifar10: no usable data in {root} ({self._why(root, exc)}); put {ARCHIVE} "
                                      f"(CIFAR-10's python version) into {root}/, or extract it there so that "
                                      f"{root}/{FOLDER}/ exists, or point [data] root at a folder holding {FOLDER}/"
                                      ) from None

    def _why(self, root: Path, exc: BaseException) -> str:
        if (root / FOLDER).is_dir():
            fix = "" if not self.config.verify else "; [data] verify = false skips the check"
            return f"{root / FOLDER} is incomplete or its files do not match CIFAR-10's MD5 sums{fix}"
        if (root / ARCHIVE).is_file():
            return f"{root / ARCHIVE} is damaged or not CIFAR-10's archive"
        if not self.config.download:
            return f"no {FOLDER}/ there, and [data] download = false"
        return f"no {FOLDER}/ there, and torchvision's download failed: {download_reason(exc)}"


def _unverified(base):
    """torchvision's class with the MD5 sums dropped: torchvision then only checks that the files exist."""

    class Unverified(base):
        train_list = [[name, None] for name, _ in base.train_list]
        test_list = [[name, None] for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return Unverified


@dalle_kit.hookimpl
def register_datasets(register):
    register(CIFAR10)
