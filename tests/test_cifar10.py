"""cifar10 reads the real torchvision format (made here, since CIFAR-10 cannot be fetched) and fails offline in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CIFAR_CLASSES as CLASSES
from conftest import make_cifar, write_recipe

import dalle_kit
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part

CIFAR10 = Registry.discover(select="").parts["dataset"]["cifar10"].cls


def test_reads_torchvision_format(tmp_path):
    root = make_cifar(tmp_path / "cifar")
    config = CIFAR10.Config(root=str(root), download=False, verify=False)
    train = CIFAR10(config).load("train")
    test = CIFAR10(config).load("test")
    assert len(train) == 100 and len(test) == 20
    assert train.images.shape == (100, 3, 32, 32)
    assert all(c.startswith("a photo of a") for c in train.captions)
    i = 7
    assert train.captions[i] == f"a photo of a {CLASSES[int(train.attributes['class'][i])]}"
    check_part(CIFAR10, config)


def test_offline_without_files_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / "empty"
    with pytest.raises(dalle_kit.UserError) as err:
        CIFAR10(CIFAR10.Config(root=str(root), download=False)).load("train")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(root) in msg and "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg
    assert "download = false" in msg
    # no address that cannot be reached offline, and no torchvision argument the recipe does not have
    assert "http" not in msg and "download=True" not in msg

    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):  # torchvision's own text, offline
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(dalle_kit.UserError) as err:
        CIFAR10(CIFAR10.Config(root=str(root), download=True)).check()
    msg = str(err.value)
    assert "download failed: Name or service not known" in msg and "http" not in msg and "\n" not in msg


def test_cifar_recipe_is_valid_and_fails_cleanly_without_data(run_cli, tmp_path, cifar_root):
    repo = Path(__file__).parent.parent
    code, out, err = run_cli(
        "recipe",
        "check",
        repo / "recipes" / "cifar.toml",
        "--set",
        f"data.root={cifar_root}",
        "--set",
        "data.verify=false",
    )
    assert code == 0, err
    recipe = write_recipe(tmp_path, (repo / "recipes" / "cifar.toml").read_text())
    for command in ("run", "recipe check"):  # refused before any run directory exists
        code, out, err = run_cli(
            *command.split(),
            recipe,
            "--set",
            f"data.root={tmp_path / 'nodata'}",
            "--set",
            "data.download=false",
            *(["--runs-dir", tmp_path / "runs", "-q"] if command == "run" else []),
        )
        assert code == 2 and "Traceback" not in err
        assert "cifar10: no usable data in" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nodata").exists(), "a run directory was left behind"


def test_official_md5_sums_are_checked(tmp_path):
    root = make_cifar(tmp_path / "cifar")  # random pixels: not the official files
    with pytest.raises(dalle_kit.UserError, match="does not match its MD5 sum"):
        CIFAR10(CIFAR10.Config(root=str(root), download=False)).load("train")


def test_a_crafted_batch_is_refused_without_running_it(tmp_path):
    """torchvision would pickle.load the batch (running whatever it names); dalle-kit's reader builds arrays only."""
    import os
    import pickle

    root = make_cifar(tmp_path / "cifar")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": Payload(), "labels": []}, f)
    with pytest.raises(dalle_kit.UserError) as err:
        CIFAR10(CIFAR10.Config(root=str(root), download=False, verify=False)).load("train")
    assert "data_batch_3" in str(err.value) and "would call posix.system" in str(err.value), err.value
    assert "\n" not in str(err.value) and not marker.exists()
