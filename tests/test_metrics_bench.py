"""`dalle-kit bench`: every combination trained and evaluated; failures recorded; finished cells skipped."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path

import pytest

import dalle_kit
from dalle_kit.tools.bench import _state_lock, load_grid, run_grid
from dalle_kit.cli import main
from dalle_kit.registry import get_registry

GRID = """
name = "tiny"
base = "shapes"
seed = 3
metrics = ["d-roc-auc"]
num_samples = 8

[set]
"data.train_size" = 128
"data.test_size" = 32
"train.steps" = 2
"train.batch_size" = 8
"generator.ngf" = 8
discriminator.ndf = 8        # unquoted dotted keys work too
"sample.every" = 0

[grid]
loss = ["bce", "hinge"]
"data.size" = [16, 24]       # 24 passes the recipe check but dcgan refuses it: those cells fail
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("DALLE_KIT_CACHE", str(tmp_path / "cache"))


def test_grid_runs_every_cell_records_failures_and_skips_finished_ones(tmp_path, capsys):
    grid = tmp_path / "tiny.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    state = run_grid(grid, out)
    cells = {(c["params"]["loss"], c["params"]["data.size"]): c for c in state["cells"]}
    assert list(cells) == [("bce", 16), ("bce", 24), ("hinge", 16), ("hinge", 24)]
    for (_, size), cell in cells.items():
        if size == 16:
            assert cell["status"] == "ok"
            result = cell["results"]["d-roc-auc"]
            assert 0 <= result["values"]["d_roc_auc"] <= 1
            assert result["protocol"]["seed"] == 3 and result["protocol"]["n_generated"] == 8
        else:
            assert cell["status"] == "failed" and "power-of-two" in cell["error"] and "\n" not in cell["error"]

    for suffix in (".md", ".csv", ".json", ".png", ".html"):
        assert (out / f"tiny{suffix}").is_file()
    md = (out / "tiny.md").read_text()
    assert (
        "## Protocol" in md
        and "| d-roc-auc | dalle-kit (ours) | 8 | 8 | shapes/test | discriminator dcgan (step 2) |" in md
    )
    assert md.count("failed: ") == 2
    rows = list(csv.DictReader(io.StringIO((out / "tiny.csv").read_text())))
    ok_rows = [r for r in rows if r["status"] == "ok"]
    assert len(ok_rows) == 2 and all(
        r["seed"] == "3" and r["n_generated"] == "8" and r["weights_hash"] for r in ok_rows
    )
    assert json.loads((out / "tiny.json").read_text())["cells"] == state["cells"]
    page = (out / "tiny.html").read_text()  # the cells side by side, failed ones with their error
    assert page.count("failed: ") == 2 and "loss=hinge, data.size=16" in page and "d-roc-auc" in page

    lines: list[str] = []
    again = run_grid(grid, out, echo=lines.append)
    assert sum("done before, skipped" in line for line in lines) == 2  # the ok cells
    assert sum("failed" in line for line in lines) == 2  # failed cells are tried again
    assert [c["results"] for c in again["cells"] if c["status"] == "ok"] == [
        c["results"] for c in state["cells"] if c["status"] == "ok"
    ]


def test_grid_is_checked_before_anything_trains(tmp_path):
    grid = tmp_path / "bad.toml"
    grid.write_text(GRID.replace('loss = ["bce", "hinge"]', 'loss = ["bce", "hnige"]'))
    with pytest.raises(dalle_kit.UserError, match="did you mean 'hinge'"):
        run_grid(grid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    grid.write_text(GRID.replace("[grid]", "[grid]\nsteps = 3"))
    with pytest.raises(dalle_kit.UserError, match="expected a non-empty list"):
        load_grid(grid, get_registry())


def test_a_cell_stopped_while_evaluated_is_evaluated_again_not_trained(tmp_path, monkeypatch):
    grid = tmp_path / "tiny.toml"
    grid.write_text(GRID.replace('"data.size" = [16, 24]', '"data.size" = [16]').replace('["bce", "hinge"]', '["bce"]'))
    import dalle_kit.tools.bench as bench

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(bench, "evaluate_run", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_grid(grid, tmp_path / "out")
    (cell,) = run_grid(grid, tmp_path / "out")["cells"]
    assert cell["status"] == "ok" and 0 <= cell["results"]["d-roc-auc"]["values"]["d_roc_auc"] <= 1, cell
    (run_dir,) = Path(cell["run_dir"]).parent.iterdir()  # the one run, not trained again
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2], rows


def test_a_recipe_handed_to_bench_says_how_to_run_it_or_bench_it(tmp_path, capsys, tiny_recipe):
    """The mirror of `run` on a grid: one line, the run command works as printed, the grid it describes runs."""
    import re
    import shlex

    assert main(["bench", "shapes"]) == 2
    err = capsys.readouterr().err
    assert "shapes: this file is a recipe, not a bench grid" in err and "unknown top-level key" not in err, err
    command = re.search(r"train it with `([^`]+)`", err)
    assert command and shlex.split(command[1])[-2:] == ["run", "shapes"]
    assert 'base = "shapes", metrics and a [grid] table' in err and "bench-shapes.toml" in err
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "g"\nbase = "{tiny_recipe}"\nmetrics = ["kid"]\n[grid]\n"train.steps" = [5, 10]\n')
    code = main(["bench", str(grid), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0 and "2 cells" in out, err


def test_bench_dry_run_lists_cells(tmp_path, capsys):
    grid = tmp_path / "tiny.toml"
    grid.write_text(GRID)
    assert main(["bench", str(grid), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "loss=hinge, data.size=16" in out and "4 cells, metrics d-roc-auc on 8 samples, seed 3" in out


def test_shipped_grid_is_valid(capsys):
    assert main(["bench", str(Path(__file__).parents[1] / "recipes" / "bench-shapes.toml"), "--dry-run"]) == 0
    assert "4 cells, metrics fid, kid, text-alignment, d-roc-auc on 1000 samples, seed 0" in capsys.readouterr().out


def test_shipped_real_image_grid_is_valid(capsys):
    grid = Path(__file__).parents[1] / "recipes" / "bench-fashion.toml"
    assert main(["bench", str(grid), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "loss=wgan-gp" in out and "  vae\n" in out  # an [[extra]] cell by its own label, as --cell takes it
    assert "5 cells, metrics fid, kid, prc, intra-fid, class-accuracy, cas on 10000 samples, seed 0" in out


def test_extra_cells_use_their_own_base_and_run_beside_the_grid(tmp_path, capsys):
    grid = tmp_path / "tiny.toml"
    grid.write_text(
        GRID.replace(
            '"data.size" = [16, 24]       # 24 passes the recipe check but dcgan refuses it: those cells fail',
            '"data.size" = [16]',
        )
        + '\n[[extra]]\nlabel = "vae"\nbase = "shapes-vae"\nset = {"generator.width" = 8, "train.encoder_width" = 8, "train.steps" = 2, '
        '"data.train_size" = 128, "data.test_size" = 32, "sample.every" = 0}\n'
    )
    loaded = load_grid(grid, get_registry())
    cells = loaded.cells()
    assert [c.base for c in cells] == ["shapes", "shapes", "shapes-vae"]
    assert cells[2].params == {"loss": "vae", "data.size": "-"}
    assert "generator.width=8" in cells[2].overrides and not any(
        "ndf" in o for o in cells[2].overrides
    )  # its own set only
    assert len({c.id for c in cells}) == 3
    state = run_grid(grid, tmp_path / "out", runs_dir=tmp_path / "runs", echo=lambda _: None)
    statuses = {c["params"]["loss"]: c["status"] for c in state["cells"]}
    # d-roc-auc needs a discriminator, which a VAE has not: that cell fails in one line, the GAN cells pass
    assert statuses == {"bce": "ok", "hinge": "ok", "vae": "failed"}
    assert "no discriminator" in state["cells"][2]["error"]
    assert "| vae | - |" in (tmp_path / "out" / "tiny.md").read_text()

    grid.write_text(GRID + '\n[[extra]]\nlabel = "vae"\nbase = "shapes-vae"\ncolour = 1\n')
    with pytest.raises(dalle_kit.RecipeError, match="unknown key"):
        load_grid(grid, get_registry())


def test_cells_run_one_at_a_time_into_one_table(tmp_path, capsys):
    """`--cell` runs the cells it names (label or id) and keeps the table's other results; `--set` reaches every
    cell (and so makes other cells); a label that names no cell, or a --set of what the grid itself sets, is one
    line before any work."""
    grid = tmp_path / "tiny.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    first = run_grid(grid, out, cells=["loss=bce, data.size=16"], echo=lambda _: None)
    assert [(c["params"]["loss"], c["status"]) for c in first["cells"]] == [("bce", "ok")]
    hinge = load_grid(grid, get_registry()).cells()[2]
    assert hinge.label == "loss=hinge, data.size=16"
    second = run_grid(grid, out, cells=[hinge.id], echo=lambda _: None)  # by id this time
    assert [(c["params"]["loss"], c["status"]) for c in second["cells"]] == [("bce", "ok"), ("hinge", "ok")]
    assert second["cells"][0] == first["cells"][0]  # kept as it was, not trained again
    md = (out / "tiny.md").read_text()
    assert "| bce | 16 |" in md and "| hinge | 16 |" in md

    threads = load_grid(grid, get_registry(), ["train.threads=1"]).cells()
    assert all("train.threads=1" in c.overrides for c in threads)
    quoted = load_grid(grid, get_registry(), ['loss.name="bce"', "train.threads = 1"]).cells()
    bare = load_grid(grid, get_registry(), ["loss.name=bce", "train.threads=1"]).cells()
    assert [c.id for c in quoted] == [c.id for c in bare]  # one cell, however the value is spelt
    assert {c.id for c in threads}.isdisjoint(c.id for c in load_grid(grid, get_registry()).cells())
    with pytest.raises(
        dalle_kit.UserError, match=r"no cell labelled 'loss=lsgan'.*; its cells: loss=bce, data.size=16;"
    ):
        run_grid(grid, tmp_path / "other", cells=["loss=lsgan"])
    with pytest.raises(dalle_kit.UserError, match=r"--set seed=1: the grid sets seed for every cell; change seed in"):
        run_grid(grid, tmp_path / "other", overrides=["seed=1"])
    assert not (tmp_path / "other").exists()
    from dalle_kit.tools.bench import select_cells

    lucic = load_grid(Path(__file__).parents[1] / "recipes" / "lucic-fashion.toml", get_registry())
    assert [c.label for c in select_cells(lucic, ["WGAN", "NS GAN"])] == ["cell=NS GAN", "cell=WGAN"]  # grid order
    capsys.readouterr()
    assert main(["bench", str(grid), "--dry-run", "--cell", hinge.label, "--set", "train.steps=3"]) == 0
    listed = capsys.readouterr().out
    assert "1 cells, metrics d-roc-auc" in listed and "loss=hinge, data.size=16" in listed and hinge.id not in listed


def test_processes_running_other_cells_merge_their_records(tmp_path):
    """Two processes saving records of different cells into one state file: each save keeps the other's records,
    in the grid's order; a record of this process replaces the file's record of the same cell."""
    from dalle_kit.tools.bench import _save_state

    path = tmp_path / "g.json"
    base = {"version": 1, "name": "g", "settings": {"seed": 0}, "cells": []}
    a = {**base, "cells": [{"id": "b", "status": "ok"}]}
    b = {**base, "cells": [{"id": "a", "status": "running"}]}
    _save_state(path, a, ["a", "b"])
    merged = _save_state(path, b, ["a", "b"])
    assert [c["id"] for c in merged["cells"]] == ["a", "b"] and json.loads(path.read_text()) == merged
    b["cells"][0]["status"] = "ok"
    assert [c["status"] for c in _save_state(path, b, ["a", "b"])["cells"]] == ["ok", "ok"]
    other = {**base, "settings": {"seed": 1}, "cells": [{"id": "c", "status": "ok"}]}  # another protocol
    assert [c["id"] for c in _save_state(path, other, ["c"])["cells"]] == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # the lock is the folder's: no lock file left

    with _state_lock(path):  # a second process asking for the lock meanwhile would wait
        fd = os.open(tmp_path, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
