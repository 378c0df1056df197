"""emoji: emoji-datasource-google read from an npm tarball or an unpacked folder, captioned, split, cached, refused."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from conftest import TINY_GAN_PARTS, EMOJI, emoji_package_files, write_recipe, write_tarball

import dalle_kit
from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part
from dalle_kit_plugins.data import emoji as emoji_module
from dalle_kit_plugins.data import packaged
from dalle_kit_plugins.data.imagefolder import split_score

Emoji = Registry.discover(select="").parts["dataset"]["emoji"].cls

RECIPE = (
    """\
name = "emoji-test"
pipeline = "gan"
seed = 0

[data]
name = "emoji"
{root}
"""
    + TINY_GAN_PARTS
)


def load(root, **settings):
    data = Emoji(Emoji.Config(root=str(root), **settings))
    return data, data.load("train"), data.load("test")


def both(train, test):
    captions = train.captions + test.captions
    images = torch.cat([train.images, test.images])
    return dict(zip(captions, images))


@pytest.fixture
def no_npm_global(monkeypatch):
    """npm's global folder holds nothing (whatever this machine has installed there)."""
    monkeypatch.setattr(emoji_module, "_npm_global", [None])


def test_the_tarball_and_every_unpacked_layout_give_the_same_data(emoji_package, tmp_path):
    _, train, test = load(emoji_package["tgz"])
    expected = both(train, test)
    assert sorted(expected) == sorted(" ".join(name.lower().split()) for _, name, *_ in EMOJI)
    folder = emoji_package["folder"]
    for root in (
        folder,
        folder.parent,
        emoji_package["tgz"].parent,
    ):  # emoji.json's folder, package/'s parent, a .tgz's
        _, train2, test2 = load(root)
        assert train2.captions == train.captions and test2.captions == test.captions
        assert all(torch.equal(a, b) for a, b in zip(both(train2, test2).values(), expected.values()))
    modules = tmp_path / "project" / "node_modules" / "emoji-datasource-google"  # what `npm install` leaves
    modules.parent.mkdir(parents=True)
    modules.symlink_to(folder, target_is_directory=True)
    assert load(tmp_path / "project")[1].captions == train.captions


def test_captions_categories_and_parse_caption(emoji_package):
    data, train, test = load(emoji_package["tgz"])
    captions = both(train, test)
    assert "grinning face" in captions and "japan flag" in captions
    names = train.attribute_names["category"]
    assert names == sorted({c for *_, c, _ in EMOJI}) == test.attribute_names["category"]
    for split in (train, test):
        for caption, label in zip(split.captions, split.attributes["category"].tolist()):
            assert data.parse_caption(caption) == {"category": names[label]}
    assert data.parse_caption("Grinning face.") == {"category": "Smileys & Emotion"}
    assert data.parse_caption("dog") == {"category": "Animals & Nature"}  # a short name
    assert data.parse_caption("a drawing of something, food & drink") == {"category": "Food & Drink"}
    assert data.parse_caption("a purple elephant") == {}

    _, train, test = load(emoji_package["tgz"], caption="short_name")
    assert {"grinning", "slightly smiling face", "jp"} <= set(train.captions + test.captions)
    _, train, test = load(emoji_package["tgz"], caption="name+category")
    assert "red apple, food & drink" in train.captions + test.captions


def test_skin_tones_are_off_by_default_and_share_their_emoji_split(emoji_package):
    _, train, test = load(emoji_package["tgz"])
    assert len(train) + len(test) == len(EMOJI)
    _, train, test = load(emoji_package["tgz"], skin_tones=True)
    captions = both(train, test)
    assert len(captions) == len(EMOJI) + 2
    tones = ["waving hand sign", "waving hand sign: light skin tone", "waving hand sign: dark skin tone"]
    assert set(tones) <= set(captions)
    split_of = {c: "train" for c in train.captions} | {c: "test" for c in test.captions}
    assert len({split_of[t] for t in tones}) == 1
    assert captions["waving hand sign: dark skin tone"][:, 16, 16].tolist() == [90, 60, 40]


def test_pixels_are_composited_on_the_background_and_area_resized(emoji_package):
    for size, background, rgb in ((32, "white", (255, 255, 255)), (64, "#102030", (16, 32, 48))):
        _, train, test = load(emoji_package["tgz"], size=size, background=background)
        images = both(train, test)
        apple = images["red apple"]
        assert apple.shape == (3, size, size) and apple.dtype == torch.uint8
        assert apple[:, 0, 0].tolist() == list(rgb)  # transparent corner: the background
        assert apple[:, size // 2, size // 2].tolist() == [220, 20, 30]  # opaque centre: the emoji's colour
        flag = images["japan flag"][:, size // 2, size // 2].tolist()  # white at alpha 128 over the background
        assert flag == [round((255 * 128 + c * 127) / 255) for c in rgb]
    _, train, test = load(emoji_package["tgz"], size=16)
    apple = both(train, test)["red apple"]
    assert apple[:, 4, 4].tolist() == [220, 20, 30] and apple[:, 3, 3].tolist() == [255, 255, 255]  # edges exact


def test_the_split_depends_on_each_emoji_code_only(emoji_package, tmp_path):
    files = emoji_package_files()
    entries = json.loads(files["emoji.json"])
    keys = [e["unified"] for e in entries]
    expected_test = {e["name"].lower() for e in entries if split_score(e["unified"], 0) < 0.5}
    assert 0 < len(expected_test) < len(entries)  # the seed-0 hash puts some in each split at 0.5
    _, train, test = load(emoji_package["tgz"], test_fraction=0.5)
    assert set(test.captions) == expected_test
    # reversed file order, another image order in the archive, an emoji added: nobody moves
    entries.reverse()
    entries.append({**entries[0], "unified": "1F99D", "name": "RACCOON", "image": "1f99d.png", "sort_order": 99})
    files["emoji.json"] = json.dumps(entries).encode()
    files["img/google/64/1f99d.png"] = files["img/google/64/1f600.png"]
    shuffled = dict(reversed(list(files.items())))
    _, train2, test2 = load(write_tarball(tmp_path / "x.tgz", shuffled), test_fraction=0.5)
    assert set(test2.captions) - {"raccoon"} == expected_test
    assert set(train2.captions) - {"raccoon"} == set(train.captions)
    assert packaged.in_test_split(keys, 0.5, 0) == packaged.in_test_split(keys[::-1], 0.5, 0)[::-1]
    _, _, other = load(emoji_package["tgz"], test_fraction=0.5, split_seed=1)
    assert set(other.captions) != expected_test  # another seed, another partition


def test_tiny_packages_still_have_both_splits():
    assert packaged.in_test_split(["a", "b"], 1e-9, 0).count(True) == 1
    assert packaged.in_test_split(["a", "b"], 1 - 1e-9, 0).count(False) == 1
    mask = packaged.in_test_split(["k", "k", "z"], 0.5, 0)
    assert mask[0] == mask[1]  # one key, one split


def test_the_conformance_kit_passes(emoji_package):
    check_part(Emoji, Emoji.Config(root=str(emoji_package["tgz"])))
    check_part(Emoji, Emoji.Config(root=str(emoji_package["folder"]), size=64, skin_tones=True))


def test_decoded_images_are_cached_as_plain_arrays(emoji_package, isolated_cache, monkeypatch):
    _, train, _ = load(emoji_package["tgz"], size=24)
    entries = [p.parent for p in (isolated_cache / "emoji").glob("*/rows.json")]
    entry = next(e for e in entries if json.loads((e / "manifest.json").read_text())["size"] == 24)
    np.load(entry / "images.npy", allow_pickle=False)  # a plain array: no pickle
    assert isinstance(json.loads((entry / "rows.json").read_text()), list)

    calls = []
    fit = packaged.fit
    monkeypatch.setattr(packaged, "fit", lambda *args: calls.append(args) or fit(*args))
    _, again, _ = load(emoji_package["tgz"], size=24)
    assert torch.equal(again.images, train.images) and again.captions == train.captions
    _, short_train, short_test = load(emoji_package["tgz"], size=24, caption="short_name")  # not in the key
    assert "grinning" in short_train.captions + short_test.captions
    assert calls == []  # neither decoded anything
    load(emoji_package["tgz"], size=24, background="black")  # pixels change: decoded again
    assert len(calls) == len(EMOJI)


def test_a_planted_pickle_in_the_cache_is_never_loaded(emoji_package, isolated_cache):
    load(emoji_package["tgz"], size=20)
    entry = next(
        p.parent
        for p in (isolated_cache / "emoji").glob("*/images.npy")
        if json.loads((p.parent / "manifest.json").read_text())["size"] == 20
    )
    np.save(entry / "images.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _, train, _ = load(emoji_package["tgz"], size=20)  # decoded again, not unpickled
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 20, 20)


def test_a_changed_package_is_decoded_again(emoji_package, tmp_path):
    files = emoji_package_files()
    tgz = write_tarball(tmp_path / "a.tgz", files)
    before = both(*load(tgz)[1:])
    files["img/google/64/1f34e.png"] = files["img/google/64/1f438.png"]  # the apple now looks like the frog
    write_tarball(tgz, files)
    after = both(*load(tgz)[1:])
    assert torch.equal(after["red apple"], before["frog face"])


def test_a_tarball_member_outside_its_folder_is_refused(tmp_path):
    evil = tarfile.TarInfo("package/../../evil.png")
    evil.size = 3
    tgz = write_tarball(tmp_path / "evil.tgz", emoji_package_files(), extra=[(evil, b"abc")])
    with pytest.raises(dalle_kit.UserError, match="outside its folder") as info:
        load(tgz)
    assert "\n" not in str(info.value) and "npm pack emoji-datasource-google@16" in str(info.value)
    assert not (tmp_path.parent / "evil.png").exists()


def test_links_in_a_tarball_are_never_followed(tmp_path):
    files = emoji_package_files()
    files.pop("img/google/64/1f34e.png")
    link = tarfile.TarInfo("package/img/google/64/1f34e.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("package/img/google/64/1f600.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "package/img/google/64/1f436.png"
    files.pop("img/google/64/1f600.png")
    data, train, test = load(write_tarball(tmp_path / "links.tgz", files, extra=[(link, b""), (hard, b"")]))
    assert "red apple" not in train.captions + test.captions and "grinning face" not in train.captions + test.captions
    assert data.skipped == {"missing images": 2}

    index = tarfile.TarInfo("package/emoji.json")
    index.type, index.linkname = tarfile.SYMTYPE, "/etc/hostname"
    only_link = {k: v for k, v in emoji_package_files().items() if k != "emoji.json"}
    tgz = write_tarball(tmp_path / "index-link.tgz", only_link, extra=[(index, b"")])
    with pytest.raises(dalle_kit.UserError, match="not an npm tarball"):
        load(tgz)


def test_damaged_files_give_one_line(tmp_path):
    (tmp_path / "not.tgz").write_bytes(b"this is no archive")
    with pytest.raises(dalle_kit.UserError, match="not an npm tarball"):
        load(tmp_path / "not.tgz")
    files = emoji_package_files()
    files["emoji.json"] = b"{ not json"
    with pytest.raises(dalle_kit.UserError, match="not valid JSON"):
        load(write_tarball(tmp_path / "bad-json.tgz", files))
    files["emoji.json"] = json.dumps([{"name": "X"}]).encode()
    with pytest.raises(dalle_kit.UserError, match="lacks a unified code"):
        load(write_tarball(tmp_path / "bad-entry.tgz", files))
    files = emoji_package_files()
    files["img/google/64/1f34e.png"] = b"\x89PNG broken"
    data, train, test = load(write_tarball(tmp_path / "bad-png.tgz", files))
    assert data.skipped == {"unreadable": 1} and len(train) + len(test) == len(EMOJI) - 1


def test_absent_package_one_line_exit_2_with_the_command(run_cli, tmp_path, monkeypatch, no_npm_global):
    monkeypatch.chdir(tmp_path)
    which = emoji_module.shutil.which
    monkeypatch.setattr(emoji_module.shutil, "which", lambda name: "/usr/bin/npm" if name == "npm" else which(name))
    recipe = write_recipe(tmp_path, RECIPE.format(root=""))
    code, out, err = run_cli("recipe", "check", recipe)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "emoji-datasource-google not found" in lines[0] and "`npm pack emoji-datasource-google@16`" in lines[0]
    code, out, err = run_cli("run", recipe, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()

    monkeypatch.setattr(emoji_module.shutil, "which", lambda name: None if name == "npm" else which(name))  # no npm
    code, out, err = run_cli("recipe", "check", recipe)
    assert code == 2 and "apt-get install -y npm && npm pack emoji-datasource-google@16" in err

    for root, says in (
        (tmp_path / "nowhere.tgz", "does not exist"),
        (tmp_path / "runs-empty", "holds no emoji.json"),
        (recipe, "is not an npm tarball"),
        (tmp_path / ("n" * 300), "cannot be used"),
        ("/dev/null", "is not a file or folder"),
    ):
        if says == "holds no emoji.json":
            root.mkdir()
        body = RECIPE.format(root=f'root = "{root}"')
        code, out, err = run_cli("recipe", "check", write_recipe(tmp_path, body, name="r2.toml"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


def test_found_where_npm_puts_it(emoji_package, tmp_path, monkeypatch, no_npm_global):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emoji-datasource-google-16.0.0.tgz").write_bytes(emoji_package["tgz"].read_bytes())  # npm pack
    assert Emoji(Emoji.Config()).locate().tarball
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setattr(emoji_module, "_npm_global", [emoji_package["folder"].parent.parent / "global"])
    global_root = emoji_package["folder"].parent.parent / "global"
    global_root.mkdir(exist_ok=True)
    link = global_root / "emoji-datasource-google"
    if not link.exists():
        link.symlink_to(emoji_package["folder"], target_is_directory=True)
    assert Emoji(Emoji.Config()).locate() == emoji_module.Source(link, tarball=False)


def test_a_run_records_where_the_package_was_found(emoji_package, tmp_path, monkeypatch, no_npm_global):
    """An empty or relative root is pinned to the absolute path found when the run starts, so the run's recipe reads
    the same files from any folder; an absolute root, or a package not found, is left as written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emoji-datasource-google-16.0.0.tgz").write_bytes(emoji_package["tgz"].read_bytes())
    pinned = Emoji.pin(Emoji.Config())
    assert pinned.root == str((tmp_path / "emoji-datasource-google-16.0.0.tgz").resolve())
    assert Emoji.pin(Emoji.Config(root="emoji-datasource-google-16.0.0.tgz")).root == pinned.root
    assert Emoji.pin(pinned) == pinned
    monkeypatch.chdir(tmp_path / "..")
    assert Emoji.pin(Emoji.Config(root="nowhere.tgz")).root == "nowhere.tgz"  # check() says how to fetch it


def test_the_images_size_is_refused_above_the_packages(run_cli, emoji_package, tmp_path):
    body = RECIPE.format(root=f'root = "{emoji_package["tgz"]}"\nsize = 128')
    code, out, err = run_cli("recipe", "check", write_recipe(tmp_path, body))
    assert code == 2 and "[data] key 'size'" in err and "between 8 and 64" in err
