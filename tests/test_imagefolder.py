"""imagefolder: a user's folder of real PNG/JPEG/WebP files with captions, decoded, split, cached and checked."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_recipe

import dalle_kit
from dalle_kit.tools.cache import content_key
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part

ImageFolder = Registry.discover(select="").parts["dataset"]["imagefolder"].cls

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SIZES = [(40, 40), (64, 32), (24, 48), (33, 20)]  # square, wide, tall, odd
FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]


def draw(path: Path, colour: str, size: tuple[int, int], fmt: str) -> None:
    """A coloured square in the middle of an image whose border is grey: after a centre crop it is the colour."""
    w, h = size
    image = Image.new("RGB", size, (128, 128, 128))
    side = min(w, h)
    image.paste(Image.new("RGB", (side, side), COLOURS[colour]), ((w - side) // 2, (h - side) // 2))
    kwargs = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    image.save(path, fmt, **kwargs)


def make_folder(root: Path, captions: str = "metadata", n: int = 12, sub: str = "") -> dict[str, str]:
    """`n` images (PNG, JPEG, WebP; four colours; several aspect ratios) with captions from `captions`.

    Returns {path relative to root: caption}. Images go to `sub` (and every third one to `sub`/nested/).
    """
    folder = root / sub if sub else root
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i in range(n):
        colour = list(COLOURS)[i % 4]
        ext, fmt = FORMATS[i % 3]
        name = f"nested/{colour}-{i}.{ext}" if i % 3 == 2 else f"{colour}-{i}.{ext}"
        (folder / name).parent.mkdir(exist_ok=True)
        draw(folder / name, colour, SIZES[i % 4], fmt)
        names[name] = f"a {colour} square number {i}"
    write_captions(folder, names, captions)
    return {(f"{sub}/{k}" if sub else k): v for k, v in names.items()}


def write_captions(folder: Path, names: dict[str, str], captions: str) -> None:
    if captions == "metadata":
        (folder / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": k, "text": v}) + "\n" for k, v in names.items())
        )
    elif captions == "csv":
        with open(folder / "captions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "text"])
            writer.writerows(names.items())
    else:
        for k, v in names.items():
            (folder / k).with_suffix(".txt").write_text(v + "\n")


def config(root: Path, **kw):
    return ImageFolder.Config(root=str(root), **{"size": 16, "workers": 0, **kw})


def load_both(root: Path, **kw):
    data = ImageFolder(config(root, **kw))
    return data, data.load("train"), data.load("test")


@pytest.mark.parametrize("source", ["metadata", "csv", "txt"])
def test_each_caption_source(tmp_path, source):
    names = make_folder(tmp_path / "imgs", source)
    data, train, test = load_both(tmp_path / "imgs")
    assert len(train) + len(test) == 12 and len(test) >= 1
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (3, 16, 16)
    assert sorted(train.captions + test.captions) == sorted(names.values())
    for part in (train, test):  # each caption's colour is its image's colour, whatever the format and aspect ratio
        for image, caption in zip(part.images, part.captions):
            colour = caption.split()[1]
            centre = image[:, 3:13, 3:13].float()
            assert (centre - torch.tensor(COLOURS[colour]).float().view(3, 1, 1)).abs().max() < 12, (
                caption,
                image[:, 8, 8],
            )
    image, caption = train[0]
    assert image.dtype == torch.float32 and -1 <= image.min() and image.max() <= 1


def test_red_stays_red_after_crop_and_png_is_exact(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    draw(root / "wide.png", "red", (90, 30), "PNG")
    draw(root / "tall.png", "blue", (30, 90), "PNG")
    write_captions(root, {"wide.png": "red", "tall.png": "blue"}, "metadata")
    _, train, test = load_both(root, size=24)
    got = {c: im for part in (train, test) for c, im in zip(part.captions, part.images)}
    red, blue = (torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, 24, 24) for c in [(255, 0, 0), (0, 0, 255)])
    # the crop keeps exactly the coloured square; only the resampling kernel at its edge sees the grey beside it
    assert torch.equal(got["red"][:, :, 2:-2], red[:, :, 2:-2]) and (got["red"].int() - red.int()).abs().max() <= 8
    assert torch.equal(got["blue"][:, 2:-2], blue[:, 2:-2]) and (got["blue"].int() - blue.int()).abs().max() <= 8


def test_channels_alpha_and_grey(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(root / "clear.png")  # fully transparent -> white
    Image.new("L", (20, 30), 77).save(root / "grey.png")
    Image.new("LA", (20, 20), (10, 255)).save(root / "greya.png")
    write_captions(root, {"clear.png": "clear", "grey.png": "grey", "greya.png": "grey alpha"}, "txt")
    _, train, test = load_both(root)
    got = {c: im for part in (train, test) for c, im in zip(part.captions, part.images)}
    assert (got["clear"] == 255).all()
    assert (got["grey"] == 77).all() and (got["grey alpha"] == 10).all()
    data, train1, test1 = load_both(root, channels=1)
    assert data.channels == 1 and tuple(train1.images.shape[1:]) == (1, 16, 16)
    got1 = {c: im for part in (train1, test1) for c, im in zip(part.captions, part.images)}
    assert (got1["grey"] == 77).all() and (got1["clear"] == 255).all()


def test_split_is_deterministic_and_stable_when_files_are_added(tmp_path):
    root = tmp_path / "imgs"
    names = make_folder(root, "metadata", n=40)
    _, train, test = load_both(root, test_fraction=0.25)
    _, train2, test2 = load_both(root, test_fraction=0.25)
    assert train.captions == train2.captions and test.captions == test2.captions
    assert 3 <= len(test) <= 20 and not set(train.captions) & set(test.captions)
    # add files: every old file stays in its split
    more = {}
    for i in range(40, 60):
        draw(root / f"extra-{i}.png", "red", (20, 20), "PNG")
        more[f"extra-{i}.png"] = f"extra {i}"
    write_captions(root, {**names, **more}, "metadata")
    _, train3, test3 = load_both(root, test_fraction=0.25)
    assert set(train.captions) <= set(train3.captions) and set(test.captions) <= set(test3.captions)
    assert len(train3) + len(test3) == 60
    # another seed, another partition
    _, _, test4 = load_both(root, test_fraction=0.25, split_seed=1)
    assert set(test4.captions) != set(test3.captions)


def test_train_and_test_folders(tmp_path):
    root = tmp_path / "imgs"
    train_names = make_folder(root, "metadata", n=6, sub="train")
    test_names = make_folder(root, "csv", n=3, sub="test")
    _, train, test = load_both(root, test_fraction=0.9)  # the folders decide; test_fraction is not used
    assert sorted(train.captions) == sorted(train_names.values())
    assert sorted(test.captions) == sorted(test_names.values())


def test_second_load_does_not_decode_and_maps_the_cache(tmp_path, monkeypatch, isolated_cache):
    root = tmp_path / "imgs"
    make_folder(root, "metadata")
    data, train, test = load_both(root)
    entry = isolated_cache / "imagefolder" / content_key(data.cache_fields(data.scan()[0]["train"]))
    assert (entry / "images.npy").is_file() and not list((isolated_cache / "imagefolder").glob("*/.*tmp*"))

    def refuse(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(Image, "open", refuse)
    _, train2, test2 = load_both(root)
    assert torch.equal(train.images, train2.images) and train.captions == train2.captions
    assert torch.equal(test.images, test2.images)
    assert isinstance(train2.images, torch.Tensor) and train2.images.dtype == torch.uint8
    array = np.load(entry / "images.npy", mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == tuple(train.images.shape)
    assert np.array_equal(array, train.images.numpy())
    # captions are read fresh every time: editing one needs no decoding and is never stale
    meta = root / "metadata.jsonl"
    meta.write_text(meta.read_text().replace('number 0"', 'number zero"'))
    _, train3, test3 = load_both(root)
    assert "a red square number zero" in train3.captions + test3.captions
    # changing a file's bytes (size, mtime) invalidates its split's entry
    monkeypatch.undo()
    victim = next(root.glob("*.png"))
    draw(victim, "yellow", (50, 50), "PNG")
    os.utime(victim, ns=(1, 1))
    _, train4, test4 = load_both(root)
    caption = f"a {victim.stem.split('-')[0]} square number {victim.stem.split('-')[1]}"
    got = {c: im for part in (train4, test4) for c, im in zip(part.captions, part.images)}
    assert got[caption][:, 8, 8].tolist() == [255, 255, 0]
    # a pixel setting is part of the key too
    _, train5, _ = load_both(root, size=8)
    assert train5.images.shape[-1] == 8


def test_without_cache_and_with_worker_processes(tmp_path, isolated_cache):
    root = tmp_path / "imgs"
    make_folder(root, "txt", n=70)  # more than one batch of 32
    before = set((isolated_cache / "imagefolder").glob("*")) if (isolated_cache / "imagefolder").exists() else set()
    _, train, test = load_both(root, cache=False)
    after = set((isolated_cache / "imagefolder").glob("*")) if (isolated_cache / "imagefolder").exists() else set()
    assert after == before
    _, train_w, test_w = load_both(root, workers=2)
    assert torch.equal(train.images, train_w.images) and train.captions == train_w.captions
    assert torch.equal(test.images, test_w.images)


def corrupt_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    names = make_folder(root, "metadata")
    (root / "broken.png").write_bytes(b"this is not a png at all" * 10)
    names["broken.png"] = "a broken image"
    write_captions(root, names, "metadata")
    return root


@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_image_is_one_line_naming_it(tmp_path, cache):
    root = corrupt_folder(tmp_path)
    data = ImageFolder(config(root, cache=cache))
    with pytest.raises(dalle_kit.UserError) as err:
        data.load("train"), data.load("test")
    msg = str(err.value)
    assert "\n" not in msg and str(root / "broken.png") in msg and "on_error" in msg and "replace or remove" in msg


def test_corrupt_image_skipped_and_counted(tmp_path, capsys):
    root = corrupt_folder(tmp_path)
    data, train, test = load_both(root, on_error="skip")
    assert len(train) + len(test) == 12 and "a broken image" not in train.captions + test.captions
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imagefolder:")]
    assert len(lines) == 1 and "skipped 1 file (1 unreadable image): broken.png" in lines[0]
    assert sum(len(v) for v in data.skipped.values()) == 1
    # the skipped entry is cached too; a later on_error = "error" load still refuses the broken file
    with pytest.raises(dalle_kit.UserError, match="broken.png"):
        ImageFolder(config(root)).load("train"), ImageFolder(config(root)).load("test")


def test_missing_caption_and_caption_without_image(tmp_path, capsys):
    root = tmp_path / "imgs"
    names = make_folder(root, "metadata")
    draw(root / "orphan.png", "red", (20, 20), "PNG")  # no caption line
    names["ghost.png"] = "an image that is not there"
    write_captions(root, names, "metadata")
    with pytest.raises(dalle_kit.UserError) as err:
        ImageFolder(config(root)).load("train")
    msg = str(err.value)
    assert "\n" not in msg and "metadata.jsonl line 13" in msg and str(root / "ghost.png") in msg
    (root / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": k, "text": v}) + "\n" for k, v in names.items() if k != "ghost.png")
    )
    with pytest.raises(dalle_kit.UserError) as err:
        ImageFolder(config(root)).load("train")
    msg = str(err.value)
    assert "\n" not in msg and str(root / "orphan.png") in msg and "has no caption" in msg
    write_captions(root, names, "metadata")
    data, train, test = load_both(root, on_error="skip")
    assert len(train) + len(test) == 12
    skipped = [entry for v in data.skipped.values() for entry in v]
    assert sorted(reason for _, reason, _ in skipped) == ["no_caption", "no_image"]
    summary = " ".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("imagefolder:"))
    assert "1 image without caption" in summary and "1 caption without image" in summary


def test_txt_sidecar_missing(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, "txt")
    victim = next(root.glob("*.txt"))
    victim.unlink()
    with pytest.raises(dalle_kit.UserError) as err:
        ImageFolder(config(root)).load("train")
    msg = str(err.value)
    assert "\n" not in msg and str(victim) in msg and "no caption" in msg


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "metadata.jsonl line 3: not valid JSON"),
        ('{"file_name": "x.png"}', 'metadata.jsonl line 3: needs the string keys "file_name" and "text"'),
        ('{"file_name": "../x.png", "text": "up"}', "metadata.jsonl line 3: file_name '../x.png' is not a path inside"),
    ],
)
def test_malformed_metadata_line(tmp_path, line, expected):
    root = tmp_path / "imgs"
    make_folder(root, "metadata")
    rows = (root / "metadata.jsonl").read_text().splitlines()
    rows.insert(2, line)
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(dalle_kit.UserError) as err:
        ImageFolder(config(root)).load("train")
    assert "\n" not in str(err.value) and expected in str(err.value)
    _, train, test = load_both(root, on_error="skip")  # the bad line is skipped, the 12 images stay
    assert len(train) + len(test) == 12


def test_csv_without_columns_and_caption_column(tmp_path):
    root = tmp_path / "imgs"
    names = make_folder(root, "csv")
    (root / "captions.csv").write_text("image,caption\n" + "".join(f"{k},{v}\n" for k, v in names.items()))
    with pytest.raises(dalle_kit.UserError) as err:
        ImageFolder(config(root)).load("train")
    msg = str(err.value)
    assert "\n" not in msg and str(root / "captions.csv") in msg and "file_name" in msg and "text" in msg
    (root / "captions.csv").write_text("file_name,caption\n" + "".join(f"{k},{v}\n" for k, v in names.items()))
    _, train, test = load_both(root, caption_column="caption")
    assert sorted(train.captions + test.captions) == sorted(names.values())


def test_empty_folder_missing_root_and_no_captions(tmp_path):
    (tmp_path / "empty").mkdir()
    for root, expected in [(tmp_path / "empty", "no images"), (tmp_path / "nowhere", "is not a folder")]:
        with pytest.raises(dalle_kit.UserError) as err:
            ImageFolder(config(root)).load("train")
        assert "\n" not in str(err.value) and str(root) in str(err.value) and expected in str(err.value)
    root = tmp_path / "bare"
    root.mkdir()
    draw(root / "a.png", "red", (10, 10), "PNG")
    with pytest.raises(dalle_kit.UserError, match="no captions in .*metadata.jsonl.*captions.csv.*txt"):
        ImageFolder(config(root)).load("train")


def test_config_validation(tmp_path):
    for bad in [
        {"size": 4},
        {"test_fraction": 0.0},
        {"test_fraction": 1.0},
        {"channels": 2},
        {"on_error": "ignore"},
        {"workers": -1},
    ]:
        with pytest.raises(ValueError):
            config(tmp_path, **bad)


def test_conformance_kit(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, "metadata")
    check_part(ImageFolder, config(root))


def tiny_recipe(tmp_path: Path, root: Path) -> Path:
    return write_recipe(
        tmp_path,
        f"""\
        name = "folder"
        pipeline = "gan"
        seed = 0

        [data]
        name = "imagefolder"
        root = "{root}"
        size = 16
        workers = 0

        [text_encoder]
        name = "bow"
        dim = 16
        embed_dim = 8

        [generator]
        name = "dcgan"
        ngf = 8
        latent_dim = 8
        text_embed = 8

        [discriminator]
        name = "dcgan"
        ndf = 8

        [loss]
        name = "hinge"

        [train]
        steps = 3
        batch_size = 8
        log_every = 1
        checkpoint_every = 3

        [sample]
        prompts = ["a red square"]
        every = 0
        per_prompt = 2
        """,
    )


def test_cli_run_on_a_folder(tmp_path, run_cli):
    root = tmp_path / "imgs"
    make_folder(root, "metadata")
    code, out, err = run_cli("run", tiny_recipe(tmp_path, root), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_d" in r] == [1, 2, 3]


def test_cli_bad_root_is_exit_2_and_one_line(tmp_path, run_cli):
    recipe = tiny_recipe(tmp_path, tmp_path / "no-such-folder")
    for args in (["recipe", "check", recipe], ["run", recipe, "--runs-dir", tmp_path / "runs", "-q"]):
        code, out, err = run_cli(*args)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "no-such-folder" in err and "root" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli("run", tiny_recipe(tmp_path, empty), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no images" in err, err
