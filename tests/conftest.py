"""Shared fixtures: a tiny recipe, the CLI in-process, and the test plugin packages installed for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dalle_kit.cli import main
from dalle_kit.registry import Registry
from heartbeat import pytest_runtest_protocol, pytest_sessionstart  # noqa: F401  (hooks: a line every few seconds in a long test)

HERE = Path(__file__).parent
PLUGIN_PACKAGES = HERE / "plugins"
collect_ignore = ["plugins"]  # the test plugin packages carry their own tests, run from inside their own install

# Every test trains with torch's own thread count, set explicitly in the environment, which wins over any
# `[train] threads` setting. tests/test_threads.py exercises the default and the automatic choice with the
# variable removed.
# Under pytest-xdist (`-n 2`: one worker a core) each worker trains on one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    __import__("torch").set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", str(__import__("torch").get_num_threads()))

#: The unit tier (`pytest -m unit`, the inner loop): modules whose tests train nothing (schemas, refusals,
#: conformance checks, data readers, losses on tensors, the CLI's listings). A module that starts training a run
#: does not belong here.
UNIT_MODULES = {
    "test_cifar10",
    "test_cli_fast",
    "test_conformance_kit",
    "test_contracts",
    "test_emoji",
    "test_grid",
    "test_imagefolder",
    "test_layers",
    "test_losses",
    "test_metrics_auc",
    "test_minilm",
    "test_mnist",
    "test_public_api",
    "test_readme_plugin",
    "test_recipe_errors",
    "test_tuxpaint",
    "test_vocab",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module is not None and item.module.__name__ in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


#: Data and text encoder of the tiny 16x16 recipes of pipelines other than gan (test_trainer, test_diffusion).
# A clip-pretrain run made tiny: 4 steps of a 1-layer, 32-wide CLIP on 256 shapes (a judge or unCLIP's CLIP).
TINY_CLIP = [
    "data.train_size=256",
    "data.test_size=64",
    "train.steps=4",
    "train.batch_size=16",
    "train.width=32",
    "train.embed_dim=32",
    "train.vision_layers=1",
    "train.text_layers=1",
    "train.warmup=1",
    "train.log_every=2",
    "train.checkpoint_every=4",
]

SHAPES_16 = """\
[data]
name = "shapes"
train_size = 512
test_size = 64
size = 16

[text_encoder]
name = "bow"
dim = 32
embed_dim = 16
"""

TINY = """\
name = "tiny"
pipeline = "gan"
seed = 0

[data]
name = "shapes"
train_size = 1024
test_size = 64

[text_encoder]
name = "bow"
dim = 32
embed_dim = 16

[generator]
name = "dcgan"
ngf = 16
latent_dim = 32
text_embed = 16

[discriminator]
name = "dcgan"
ndf = 16

[loss]
name = "hinge"

[train]
steps = 30
batch_size = 32
log_every = 5
checkpoint_every = 10

[sample]
prompts = ["a red circle", "a blue square"]
every = 15
per_prompt = 2
"""


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """A fresh dalle-kit cache for the session: no test relies on statistics or probes cached by earlier runs."""
    root = tmp_path_factory.mktemp("dalle-kit-cache")
    previous = os.environ.get("DALLE_KIT_CACHE")
    os.environ["DALLE_KIT_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("DALLE_KIT_CACHE", None)
    else:
        os.environ["DALLE_KIT_CACHE"] = previous


def fashion_mnist_root(tmp_root: Path) -> Path | None:
    """None when the real Fashion-MNIST is installed (apt-get install dataset-fashion-mnist); otherwise a folder
    with 100 training and 20 test images written in the official IDX format, so a fresh machine without the
    Debian package still checks every recipe and part that names fashion-mnist (the real-data tests skip)."""
    import numpy as np

    from dalle_kit_plugins.data.mnist import FILES, FashionMNIST, write_idx

    if (Path(FashionMNIST.system_folder) / "t10k-images-idx3-ubyte.gz").is_file():
        return None

    folder = tmp_root / "fashion-mnist-idx"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 100), ("test", 20)):
        images, labels = FILES[split]
        write_idx(folder / (images + ".gz"), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / (labels + ".gz"), (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path | None:
    return fashion_mnist_root(tmp_path_factory.mktemp("fashion"))


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar(root: Path, per_batch: int = 20) -> Path:
    """Files laid out exactly as the python version of CIFAR-10 (cifar-10-batches-py/: pickled dicts of numpy
    arrays), random pixels; CIFAR-10 itself cannot be fetched here. Their MD5 sums are not the official ones, so
    recipes read them with [data] verify = false."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, per_batch).tolist()
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES}, f)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture
def offline_inception(monkeypatch, tmp_path):
    """No standard Inception weights anywhere: an empty torch home, no configured file (fid-helper's are used)."""
    monkeypatch.delenv("DALLE_KIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def write_recipe(tmp_path: Path, body: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `dalle-kit ARGS` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """Every package under tests/plugins installed with pip into a temporary folder (not the venv)."""
    target = tmp_path_factory.mktemp("site")
    packages = sorted(str(p) for p in PLUGIN_PACKAGES.iterdir() if (p / "pyproject.toml").exists())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *packages,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@pytest.fixture
def third_party(plugin_site, monkeypatch):
    """Make the installed test plugins discoverable in this process; returns a loader of registries."""
    monkeypatch.syspath_prepend(str(plugin_site))

    def discover(select: str | None = None) -> Registry:
        return Registry.discover(select=select)

    return discover


def cli_subprocess(*args: str, site: Path | None = None, select: str | None = None, cwd: Path | None = None):
    """The real `dalle-kit` executable, optionally with the test plugins on its path."""
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if select is None:
        env.pop("DALLE_KIT_PLUGINS", None)
    else:
        env["DALLE_KIT_PLUGINS"] = select
    exe = Path(sys.executable).parent / "dalle-kit"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (and Hugging Face libraries are told to stay offline)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


#: The parts of a tiny gan recipe, for the dataset tests' recipes (a [data] table before it).
TINY_GAN_PARTS = """
[text_encoder]
name = "bow"

[generator]
name = "dcgan"
ngf = 8

[discriminator]
name = "dcgan"
ndf = 8

[loss]
name = "hinge"
"""

#: The emoji of the fake emoji-datasource-google package: (unified, name, short names, category, RGBA colour).
EMOJI = [
    ("1F600", "GRINNING FACE", ["grinning"], "Smileys & Emotion", (250, 200, 0, 255)),
    ("1F642", "SLIGHTLY SMILING FACE", ["slightly_smiling_face"], "Smileys & Emotion", (240, 180, 20, 255)),
    ("1F436", "DOG FACE", ["dog"], "Animals & Nature", (150, 90, 40, 255)),
    ("1F438", "FROG FACE", ["frog"], "Animals & Nature", (40, 180, 40, 255)),
    ("1F34E", "RED APPLE", ["apple"], "Food & Drink", (220, 20, 30, 255)),
    ("1F44B", "WAVING HAND SIGN", ["wave"], "People & Body", (255, 210, 120, 255)),
    ("1F1EF-1F1F5", "Japan Flag", ["jp", "flag-jp"], "Flags", (255, 255, 255, 128)),  # half transparent
]
EMOJI_TONES = {"1F3FB": (250, 220, 190, 255), "1F3FF": (90, 60, 40, 255)}  # the waving hand's two variants


def _emoji_png(rgba: tuple[int, int, int, int]) -> bytes:
    """64x64 RGBA: a 32x32 square of the colour in the middle of transparent pixels."""
    import io

    from PIL import Image

    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (32, 32), rgba), (16, 16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def emoji_package_files(entries=EMOJI) -> dict[str, bytes]:
    """The files of a small emoji-datasource-google 16.0.0, as npm lays it out (paths inside package/)."""
    import json

    index, files = [], {}
    for order, (unified, name, short, category, rgba) in enumerate(entries):
        image = unified.lower() + ".png"
        entry = {
            "name": name,
            "unified": unified,
            "image": image,
            "short_name": short[0],
            "short_names": short,
            "category": category,
            "subcategory": category.split()[0].lower(),
            "sort_order": order,
            "has_img_google": True,
        }
        files[f"img/google/64/{image}"] = _emoji_png(rgba)
        if unified == "1F44B":
            entry["skin_variations"] = {}
            for tone, colour in EMOJI_TONES.items():
                variant = f"{unified}-{tone}"
                entry["skin_variations"][tone] = {"unified": variant, "image": variant.lower() + ".png"}
                files[f"img/google/64/{variant.lower()}.png"] = _emoji_png(colour)
        index.append(entry)
    files["emoji.json"] = json.dumps(index).encode()
    files["package.json"] = json.dumps({"name": "emoji-datasource-google", "version": "16.0.0"}).encode()
    return files


def write_tarball(path: Path, files: dict[str, bytes], extra=()) -> Path:
    """An npm-pack style .tgz: every file under package/; `extra` adds raw TarInfo members (links, escapes)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name in ("emoji.json", "package.json"):  # npm puts the top-level files first
            if name in files:
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(files[name])
                tar.addfile(info, io.BytesIO(files[name]))
        for member, data in extra:
            tar.addfile(member, io.BytesIO(data) if data else None)
        for name, data in files.items():
            if name not in ("emoji.json", "package.json"):
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_emoji_package(root: Path) -> dict[str, Path]:
    """The fake package as an npm-pack tarball and unpacked (``root/unpacked/package/``): {"tgz": .., "folder": ..}."""
    files = emoji_package_files()
    root.mkdir(parents=True, exist_ok=True)
    tgz = write_tarball(root / "emoji-datasource-google-16.0.0.tgz", files)
    folder = root / "unpacked" / "package"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return {"tgz": tgz, "folder": folder}


@pytest.fixture(scope="session")
def emoji_package(tmp_path_factory) -> dict[str, Path]:
    return make_emoji_package(tmp_path_factory.mktemp("emoji"))


TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
STAMP_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
    '<rect x="10" y="10" width="20" height="20" fill="#0000ff"/></svg>'
)


def make_stamps(root: Path) -> Path:
    """A small Tux Paint stamps tree in the package's layout: <category>/.../<name>.png|.svg with <name>.txt whose
    first unprefixed line is English, translations as ``xx.utf8=``; plus what the reader must leave out."""
    from PIL import Image

    def png(rel: str, size: tuple[int, int], colour: tuple[int, ...]) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, colour).save(root / rel)

    def txt(rel: str, text: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")

    png("animals/birds/crane.png", (40, 20), (200, 30, 30, 255))  # wide: padded above and below
    txt("animals/birds/crane.txt", "A crowned crane.\nfr.utf8=Une grue couronnee.\npt_BR.utf8=Um grou.\n")
    png("animals/birds/crane_mirror.png", (40, 20), (30, 30, 200, 255))  # an alternate image, not a stamp
    png("animals/frog.png", (30, 30), (30, 200, 30, 128))  # half transparent
    txt("animals/frog.txt", "de.utf8=Ein Frosch.\nA frog.\nsr@latin.utf8=Zaba.\n")  # English after a translation
    png("food/pear.png", (20, 40), (200, 200, 30, 255))  # PNG and SVG of one stamp: the PNG is read
    (root / "food/pear.svg").write_text(STAMP_SVG)
    txt("food/pear.txt", "A yellow pear.\n")
    (root / "food/plum.svg").write_text(STAMP_SVG)  # SVG only
    txt("food/plum.txt", "A blue plum.\nes.utf8=Una ciruela azul.\n")
    png("food/bun.png", (32, 32), (150, 100, 50, 255))
    txt("food/bun.txt", "\ufeffA   sticky\tbun.\r\n")
    png("cartoon/tux.png", (32, 32), (0, 0, 0, 255))  # no .txt: left out
    png("cartoon/tux2.png", (32, 32), (10, 10, 10, 255))
    txt("cartoon/tux2.txt", "fr.utf8=Tux.\n")  # only a translation: left out
    for i in range(6):
        png(f"town/house{i}.png", (24, 24), (100 + 20 * i, 100, 100, 255))
        txt(f"town/house{i}.txt", f"House number {i}.\n")
    (root / "town/house0.ogg").write_bytes(b"OggS")  # sounds and options are not stamps
    (root / "town/house0.dat").write_text("colorable\n")
    return root


@pytest.fixture(scope="session")
def stamps_root(tmp_path_factory) -> Path:
    return make_stamps(tmp_path_factory.mktemp("stamps"))
