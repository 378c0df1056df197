"""tuxpaint: Tux Paint's stamps with their English descriptions, fitted without stretching, SVGs, refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import TINY_GAN_PARTS, make_stamps, write_recipe

import dalle_kit
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins.data import tuxpaint as tuxpaint_module
from dalle_kit_plugins.data.imagefolder import split_score

TuxPaint = Registry.discover(select="").parts["dataset"]["tuxpaint"].cls

RECIPE = (
    """\
name = "tuxpaint-test"
pipeline = "gan"
seed = 0

[data]
name = "tuxpaint"
root = "{root}"
"""
    + TINY_GAN_PARTS
)

CAPTIONED = {  # what the fixture's stamps say, by caption: (key, category)
    "A crowned crane.": ("animals/birds/crane", "animals"),
    "A frog.": ("animals/frog", "animals"),
    "A yellow pear.": ("food/pear", "food"),
    "A blue plum.": ("food/plum", "food"),
    "A sticky bun.": ("food/bun", "food"),
    **{f"House number {i}.": (f"town/house{i}", "town") for i in range(6)},
}


def svg_works() -> bool:
    return tuxpaint_module.svg_renderer()[0] is not None


def load(root, **settings):
    data = TuxPaint(TuxPaint.Config(root=str(root), **settings))
    train, test = data.load("train"), data.load("test")
    return data, train, test


def by_caption(train, test):
    return dict(zip(train.captions + test.captions, torch.cat([train.images, test.images])))


def test_english_line():
    assert tuxpaint_module.english_line("A koala.\nfr.utf8=Un koala.\n") == "A koala."
    assert tuxpaint_module.english_line("ca@valencia.utf8=Un coala.\n\n  Two  koalas. \n") == "Two koalas."
    assert tuxpaint_module.english_line("pt_BR.utf8=Um coala.\nsr@latin.utf8=Koala.\n") == ""
    assert tuxpaint_module.english_line("\ufeffA hat.\r\n") == "A hat."


def test_stamps_captions_and_what_is_left_out(stamps_root, capsys):
    data, train, test = load(stamps_root)
    images = by_caption(train, test)
    expected = set(CAPTIONED) if svg_works() else set(CAPTIONED) - {"A blue plum."}
    assert set(images) == expected
    plum = {} if svg_works() else {"SVG not rasterised": 1}
    assert data.skipped == {"without a caption": 2, **plum}
    err = capsys.readouterr().err
    assert err.count("tuxpaint: ") == 1 and "left out 2 without a caption" in err
    load(stamps_root)  # the same line is not said twice in one process
    assert "tuxpaint: " not in capsys.readouterr().err
    names = train.attribute_names["category"]
    assert names == ["animals", "food", "town"]
    for split in (train, test):
        for caption, label in zip(split.captions, split.attributes["category"].tolist()):
            assert names[label] == CAPTIONED[caption][1]
            assert data.parse_caption(caption) == {"category": CAPTIONED[caption][1]}
    assert data.parse_caption("a crowned crane") == {"category": "animals"}
    assert data.parse_caption("something from the town") == {"category": "town"}
    assert data.parse_caption("a flying saucer") == {}
    _, train, test = load(stamps_root, caption="text+category")
    assert "A crowned crane. (animals)" in train.captions + test.captions


def test_pictures_keep_their_aspect_on_the_background(stamps_root):
    _, train, test = load(stamps_root, size=32)
    images = by_caption(train, test)
    crane = images["A crowned crane."]  # 40x20 red: 32x16 in the middle, white above and below
    assert crane[:, 16, 16].tolist() == [200, 30, 30] and crane[:, 2, 16].tolist() == [255, 255, 255]
    assert crane[:, 8, 0].tolist() == [200, 30, 30] and crane[:, 7, 16].tolist() == [255, 255, 255]
    pear = images["A yellow pear."]  # 20x40, read from its PNG (the SVG beside it is a blue square)
    assert pear[:, 16, 16].tolist() == [200, 200, 30] and pear[:, 16, 2].tolist() == [255, 255, 255]
    frog = images["A frog."][:, 16, 16].tolist()  # half transparent green over white
    assert frog == [round((c * 128 + 255 * 127) / 255) for c in (30, 200, 30)]
    _, train, test = load(stamps_root, size=32, background="black")
    assert by_caption(train, test)["A crowned crane."][:, 2, 16].tolist() == [0, 0, 0]


def test_svg_stamps_are_rasterised_or_counted_once(stamps_root, monkeypatch, capsys):
    if svg_works():
        _, train, test = load(stamps_root, size=40)
        plum = by_caption(train, test)["A blue plum."]  # a 20x20 blue square on a 40x40 page
        assert plum[:, 20, 20].tolist() == [0, 0, 255] and plum[:, 2, 2].tolist() == [255, 255, 255]
    capsys.readouterr()
    monkeypatch.setattr(tuxpaint_module, "svg_renderer", lambda: (None, "INSTALL-SVG-COMMAND"))
    data, train, test = load(stamps_root, size=40)
    assert "A blue plum." not in train.captions + test.captions
    assert data.skipped["SVG not rasterised"] == 1
    err = capsys.readouterr().err
    assert err.count("1 SVG not rasterised") == 1 and "`INSTALL-SVG-COMMAND`" in err
    data, _, _ = load(stamps_root, size=40, svg=False)
    assert data.skipped["SVG not rasterised"] == 1 and "INSTALL" not in capsys.readouterr().err


def test_the_split_follows_each_stamps_sentence(stamps_root, tmp_path):
    """Stamps that share a sentence share a split (no test caption is a train caption); a stamp added leaves the
    others where they were; ``split_by = "path"`` hashes each stamp's path (the split of older runs)."""
    data, train, test = load(stamps_root, test_fraction=0.3)
    normal = {c: " ".join(c.lower().split()).rstrip(" .!") for c in CAPTIONED}
    expected = {c for c in CAPTIONED if split_score(normal[c], 0) < 0.3}
    assert set(test.captions) == expected & set(train.captions + test.captions)
    copy = tmp_path / "copy"
    shutil.copytree(stamps_root, copy)
    (copy / "town" / "house9.png").write_bytes((copy / "town" / "house0.png").read_bytes())
    (copy / "town" / "house9.txt").write_text("House number 9.\n")
    for i, sentence in enumerate(["A frog.", "a  FROG", "House number 0."]):  # one sentence, another stamp
        (copy / "town" / f"again{i}.png").write_bytes((copy / "town" / "house1.png").read_bytes())
        (copy / "town" / f"again{i}.txt").write_text(f"{sentence}\n")
    _, train2, test2 = load(copy, test_fraction=0.3)
    new = {"House number 9.", "a FROG"}  # spaces collapsed when read
    assert set(test2.captions) - new == set(test.captions)
    assert set(train2.captions) - new == set(train.captions)
    assert test2.captions.count("A frog.") in (0, 2) and test2.captions.count("House number 0.") in (0, 2)
    assert ("a FROG" in test2.captions) == ("A frog." in test2.captions)
    _, train3, test3 = load(copy, test_fraction=0.3, split_by="path")
    paths = {c: k for c, (k, _) in CAPTIONED.items()}
    assert {c for c in test3.captions if c in paths} == {c for c in paths if split_score(paths[c], 0) < 0.3} & set(
        train3.captions + test3.captions
    )


def test_the_conformance_kit_passes(stamps_root):
    check_part(TuxPaint, TuxPaint.Config(root=str(stamps_root)))
    check_part(TuxPaint, TuxPaint.Config(root=str(stamps_root), size=64, caption="text+category"))


def test_edited_captions_and_images_are_read_again(stamps_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(stamps_root, copy)
    load(copy)
    (copy / "food" / "bun.txt").write_text("A bun with a longer description.\n")
    _, train, test = load(copy)
    assert "A bun with a longer description." in train.captions + test.captions


def test_missing_stamps_one_line_exit_2_with_the_apt_command(run_cli, tmp_path):
    empty = tmp_path / "stamps"
    empty.mkdir()
    recipe = write_recipe(tmp_path, RECIPE.format(root=empty))
    for command in (("recipe", "check", recipe), ("run", recipe, "--runs-dir", tmp_path / "runs")):
        code, out, err = run_cli(*command)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "apt-get update && " in lines[0] and "apt-get install -y tuxpaint-stamps-default" in lines[0]
        assert f"no stamps in {empty}" in lines[0]
    assert not (tmp_path / "runs").exists()
    code, out, err = run_cli("recipe", "check", write_recipe(tmp_path, RECIPE.format(root=tmp_path / "nope"), "r.toml"))
    assert code == 2 and "[data] key 'root'" in err and len(err.strip().splitlines()) == 1


def test_the_default_root_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(tuxpaint_module, "DEFAULT_ROOT", str(tmp_path / "usr-share-tuxpaint-stamps"))
    data = TuxPaint(TuxPaint.Config(root=str(tmp_path / "usr-share-tuxpaint-stamps")))
    with pytest.raises(dalle_kit.UserError, match="tuxpaint-stamps-default is not installed"):
        data.check()


def test_a_stamp_that_cannot_be_read_is_counted(tmp_path):
    root = make_stamps(tmp_path / "stamps")
    (root / "town" / "house3.png").write_bytes(b"\x89PNG not really")
    data, train, test = load(root)
    assert data.skipped["unreadable"] == 1 and "House number 3." not in train.captions + test.captions


def test_the_cache_holds_plain_arrays_and_json(stamps_root, isolated_cache):
    import json

    import numpy as np

    load(stamps_root)
    entries = list((isolated_cache / "tuxpaint").glob("*/images.npy"))
    assert entries
    for path in entries:
        np.load(path, allow_pickle=False)
        assert isinstance(json.loads((path.parent / "rows.json").read_text()), list)
