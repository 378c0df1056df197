"""Dataset `cifar10`: CIFAR-10 through torchvision, captioned with its class name ("a photo of a cat")."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch

import dalle_kit
from dalle_kit import ImageCaptions, param

ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class CIFAR10(dalle_kit.Dataset):
    """CIFAR-10 (32x32, 50k train / 10k test) via torchvision.datasets.CIFAR10, class-name captions."""

    name = "cifar10"

    @attrs.frozen
    class Config:
        root: str = param("data/cifar10", "folder holding cifar-10-batches-py/ (or where to download it)")
        download: bool = param(True, "download the archive when it is missing and a network exists")
        verify: bool = param(True, "check the files' MD5 sums as torchvision does (off: only check they exist)")
        caption: str = param("a photo of a {}", "caption template; {} is the class name")

    @property
    def image_size(self) -> int:
        return 32

    def load(self, split: str) -> ImageCaptions:
        if split not in self.splits:
            raise dalle_kit.UserError(f"cifar10: unknown split '{split}'; use 'train' or 'test'")
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        cls = TorchvisionCIFAR10 if self.config.verify else _unverified(TorchvisionCIFAR10)
        root = Path(self.config.root)
        try:
            ds = cls(str(root), train=split == "train", download=self.config.download)
        except Exception as exc:  # offline download errors come as URLError, OSError or RuntimeError
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise dalle_kit.UserError(
                f"cifar10: no usable data in {root} ({cause}); put {ARCHIVE} from {URL} into {root}/ "
                f"or extract it there so that {root}/cifar-10-batches-py/ exists, or set [data] root"
            ) from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        targets = torch.tensor(ds.targets, dtype=torch.long)
        captions = [self.config.caption.format(ds.classes[t]) for t in ds.targets]
        return ImageCaptions(images, captions, attributes={"class": targets}, attribute_names={"class": ds.classes})


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
