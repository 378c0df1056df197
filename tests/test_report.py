"""A run's report.html and `dalle-kit compare`: written by training and by the commands, self-contained (every image a
PNG data URI), complete (recipe, parts, every score with its protocol), refusing bad input in one line, never putting
scores of two protocols in one column; and, where Chromium is installed, drawn by a real browser with every image."""

from __future__ import annotations

import base64
import copy
import html
import importlib.util
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY, write_recipe
from dalle_kit import api
from dalle_kit.tools.compare import Entry, metric_table, render_markdown, write_bench_page, write_comparison
from dalle_kit.tools.report import REPORT_FILE, RunFiles, write_report

ROOT = Path(__file__).parent.parent
BODY = TINY.replace("steps = 30", "steps = 20") + '\n[eval]\nmetrics = ["d-roc-auc"]\nnum_samples = 16\nevery = 10\n'
#: A second, different run: another loss, shorter, never evaluated.
OTHER = (
    TINY.replace("steps = 30", "steps = 10")
    .replace('name = "hinge"', 'name = "bce"')
    .replace('name = "tiny"', 'name = "tiny-bce"')
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: (evaluated hinge run of 20 steps, unevaluated bce run of 10 steps)."""
    tmp = tmp_path_factory.mktemp("report-runs")
    first = api.train(str(write_recipe(tmp, BODY, "a.toml")), runs_dir=tmp / "runs", quiet=True)
    second = api.train(str(write_recipe(tmp, OTHER, "b.toml")), runs_dir=tmp / "runs", quiet=True)
    return first.dir, second.dir


def _render_pages():
    spec = importlib.util.spec_from_file_location("render_pages", ROOT / "tests" / "render_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Structure(HTMLParser):
    """Collects every <img> src and checks that elements close in order (void elements aside)."""

    VOID = {"img", "br", "meta", "input", "hr", "link", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_page(path: Path) -> str:
    """The page's text, after checking its structure and that every image is an embedded PNG that decodes."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = _Structure()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors[:3], parser.stack)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as image:
            assert image.format == "PNG"
            image.load()
    assert (
        "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    )  # nothing fetched
    return text


def images(text: str) -> int:
    return len(re.findall(r"<img\b", text))


def test_the_report_plugin_comes_in_through_the_entry_point_group():
    from dalle_kit.registry import Registry

    plugin = next(p for p in Registry.discover(select="").plugins if p.name == "events.html_report")
    assert plugin.distribution == "dalle-kit"


def test_training_writes_a_complete_self_contained_report(runs):
    run_dir, _ = runs
    text = check_page(run_dir / REPORT_FILE)
    files = RunFiles(run_dir)
    assert f"<h1>{files.name}<small>{run_dir.name}</small></h1>" in text
    assert html.escape(files.recipe_text) in text  # the resolved recipe, verbatim
    for section, part in files.parts.items():  # the parts table: section, name, distribution and version
        assert re.search(
            rf"<td>{section}</td><td>{part['kind']}</td><td>{part['name']}</td><td>[^<]*</td>"
            rf"<td>{part['distribution']}</td><td>{part['version']}</td>",
            text,
        ), section
    evals = files.eval_rows
    assert [r["step"] for r in evals] == [10, 20]  # refreshed after the final evaluation (run_evaluated)
    for row in evals:  # every score, and its protocol in full
        for value in row["protocol"].values():
            assert html.escape(str(value)) in text
    assert "d_roc_auc = <b>" in text
    assert text.count("<svg ") == len(files.series()) >= 3  # one chart per logged value (loss_d, loss_g, lr...)
    grids = files.grids()
    assert [step for step, _ in grids] == [15, 20]
    assert images(text) == len(grids) + 1  # the strip, and the newest shown large
    assert 'type="range"' in text and 'max="1"' in text


def test_a_run_with_no_scores_or_grids_still_gives_a_page(runs, tmp_path, run_cli):
    bare = tmp_path / "bare"
    shutil.copytree(runs[1], bare, ignore=shutil.ignore_patterns("samples", "checkpoints", "tensorboard", REPORT_FILE))
    code, out, err = run_cli("report", bare)
    assert code == 0, err
    assert out.strip() == str(bare / REPORT_FILE)
    text = check_page(bare / REPORT_FILE)
    assert "No evaluations yet" in text and "No sample grids yet" in text and "newest checkpoint: <b>none yet" in text
    assert f"dalle-kit eval {bare} --metric text-alignment --metric fid" in text  # metrics that suit its data
    assert images(text) == 0
    (bare / "metrics.jsonl").unlink()
    (bare / "parts.json").unlink()
    text = check_page(write_report(bare, tmp_path / "elsewhere.html"))
    assert "No training rows logged yet" in text and "No parts.json" in text


def test_a_damaged_grid_is_left_out(runs, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs[0], damaged, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (damaged / "samples" / "step-00000020.png").write_bytes(b"\x89PNG\r\n")  # cut short by a crash
    text = check_page(write_report(damaged))
    assert images(text) == 2 and "step 15" in text  # the good grid, in the strip and shown large


def test_thread_changes_are_in_the_summary(runs, tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(runs[1], shared, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    assert "CPU threads" not in check_page(write_report(shared))  # none logged: nothing said
    with (shared / "metrics.jsonl").open("a") as f:  # as the trainer logs them (tests/test_threads.py)
        for step, count in ((4, 1), (9, 2)):
            f.write(
                json.dumps({"step": step, "kind": "threads", "time": 1.0, "threads": count, "setting": "auto"}) + "\n"
            )
    text = check_page(write_report(shared))
    assert "CPU threads: <b>1 from step 4, 2 from step 9</b>" in text


def test_text_is_escaped(runs, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(runs[1], odd, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    recipe = (odd / "recipe.toml").read_text().replace('"a red circle"', '"a <script>alert(1)</script> & circle"')
    (odd / "recipe.toml").write_text(recipe)
    text = check_page(write_report(odd))
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; circle" in text


@pytest.mark.parametrize("target", ["missing", "empty-dir", "a-file.txt"])
def test_report_refuses_what_is_not_a_run(tmp_path, run_cli, target):
    path = tmp_path / target
    if target == "empty-dir":
        path.mkdir()
    elif target.endswith(".txt"):
        path.write_text("not a run")
    code, out, err = run_cli("report", path)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], err
    assert not path.is_dir() or not (path / REPORT_FILE).exists()


def test_compare_two_runs(runs, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("compare", *runs, "--prompt", "a red circle", "--prompt", "a blue square", "-n", "3")
    assert code == 0, err
    html_path, md_path = (Path(line) for line in out.split())
    assert html_path == Path("compare/compare.html") and md_path == Path("compare/compare.md")
    text = check_page(tmp_path / html_path)
    assert images(text) == 2  # a fresh grid per run, drawn from its newest checkpoint
    assert text.count("drawn now from its newest checkpoint") == 2 and "seed 0" in text
    md = (tmp_path / md_path).read_text()
    for page in (text, md):
        assert "loss.name" in page and "train.steps" in page and "name" in page  # the keys that differ
        assert "keys have the same value in every run" in page
        assert "d-roc-auc" in page and "P1" in page
    assert re.search(r"\| `loss.name` \| `\"hinge\"` \| `\"bce\"` \|", md)
    a, b = (p.name for p in runs)
    assert re.search(rf"\| {a} \| [0-9.]+ \(step 20\) \|", md) and f"| {b} | - |" in md  # the unevaluated run: no score


def test_compare_needs_two_runs_and_names_a_bad_one(runs, tmp_path, run_cli):
    code, _, err = run_cli("compare", runs[0])
    assert code == 2 and "at least two runs" in err and len(err.strip().splitlines()) == 1
    assert re.search(rf"dalle-kit report {re.escape(str(runs[0]))}` shows one run", err), err  # that run, no RUN
    code, _, err = run_cli("compare", *runs, "--prompt", " ")
    assert code == 2 and " ".join(f"compare {runs[0]} {runs[1]} --prompt".split()) in err, err
    code, _, err = run_cli("compare", runs[0], tmp_path / "nowhere")
    assert code == 2 and str(tmp_path / "nowhere") in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        "compare", *runs, "-n", "300", "-o", tmp_path / "out"
    )  # 4 prompts x 300: refused before drawing
    assert code == 2 and "at most 1024" in err and not (tmp_path / "out").exists()
    code, _, err = run_cli("report", runs[0], "-o", tmp_path)
    assert code == 2 and "is a directory" in err and len(err.strip().splitlines()) == 1


def _with_rows(source: Path, target: Path, rows: list[dict]) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    lines = [line for line in (target / "metrics.jsonl").read_text().splitlines() if '"kind": "eval"' not in line]
    (target / "metrics.jsonl").write_text("\n".join([*lines, *(json.dumps(r) for r in rows)]) + "\n")
    return target


def test_compare_never_puts_two_protocols_in_one_column(runs, tmp_path):
    protocol = {
        "n_generated": 100,
        "n_reference": 100,
        "reference_split": "test",
        "extractor": "inception (test)",
        "weights_hash": "ab" * 32,
        "seed": 0,
        "dataset": "shapes",
    }
    other = {**protocol, "n_generated": 200}  # more images: a different protocol, not comparable
    kid = {"metric": "kid", "kid_mean": 0.5, "kid_std": 0.1, "protocol": protocol}
    a = _with_rows(
        runs[0],
        tmp_path / "a",
        [
            {"step": 20, "kind": "eval", "metric": "fid", "fid": 10.0, "protocol": protocol},
            {"step": 20, "kind": "eval", **kid},
        ],
    )
    b = _with_rows(
        runs[0],
        tmp_path / "b",
        [
            {"step": 20, "kind": "eval", "metric": "fid", "fid": 99.0, "protocol": other},
            {"step": 20, "kind": "eval", **{**kid, "kid_mean": 0.25}},
        ],
    )
    c = _with_rows(
        runs[0],
        tmp_path / "c",
        [{"step": 20, "kind": "eval", "metric": "fid", "fid": 12.0, "protocol": copy.deepcopy(protocol)}],
    )
    entries = [Entry(p.name, RunFiles(p)) for p in (a, b, c)]
    table = metric_table(entries)
    columns = {(col.metric, col.value, col.protocol): j for j, col in enumerate(table.columns)}
    assert list(columns) == [
        ("fid", "fid", "P1"),
        ("fid", "fid", "P2"),
        ("kid", "kid_mean", "P1"),
        ("kid", "kid_std", "P1"),
    ]
    fid1, fid2 = columns[("fid", "fid", "P1")], columns[("fid", "fid", "P2")]
    assert {i: table.cells[(i, fid1)][0] for i in range(3) if (i, fid1) in table.cells} == {0: 10.0, 2: 12.0}
    assert {i: table.cells[(i, fid2)][0] for i in range(3) if (i, fid2) in table.cells} == {1: 99.0}
    assert table.columns[fid2].other and not table.columns[fid1].other
    assert table.protocols.seen == [protocol, other]
    md = render_markdown(entries, "t")
    assert "| run | fid · P1 | fid · P2 ⚠ other protocol | kid / kid_mean · P1 | kid / kid_std · P1 |" in md
    assert "| a | 10 (step 20) | - | 0.5 (step 20) | 0.1 (step 20) |" in md
    assert "| b | - | 99 (step 20) | 0.25 (step 20) | 0.1 (step 20) |" in md
    assert "never in the same column" in md
    html_path, _ = write_comparison([a, b, c], tmp_path / "out", grids=False)
    text = check_page(html_path)
    assert text.count('class="other-protocol"') == 1 and "never in the same column" in text
    assert "| P2 | fid | 200 | 100 | shapes | test | inception (test) |" in md


def test_bench_page_shows_cells_with_their_last_grids(runs, tmp_path):
    state = {
        "name": "tiny-bench",
        "settings": {"base": "shapes", "seed": 0, "num_samples": 16, "metrics": ["d-roc-auc"]},
        "cells": [
            {"params": {"loss": "hinge"}, "status": "ok", "run_dir": str(runs[0])},
            {"params": {"loss": "bce"}, "status": "ok", "run_dir": str(runs[1])},
            {"params": {"loss": "wgan"}, "status": "failed", "error": "no such loss", "run_dir": None},
        ],
    }
    bare = tmp_path / "no-grids"
    shutil.copytree(runs[1], bare, ignore=shutil.ignore_patterns("samples", "checkpoints", "tensorboard"))
    state["cells"].append({"params": {"loss": "bare"}, "status": "ok", "run_dir": str(bare)})
    text = check_page(write_bench_page(state, tmp_path / "tiny-bench.html"))
    assert images(text) == 2  # the two cells that saved grids; no new drawing
    assert "the grid its training saved at step 20" in text and "the grid its training saved at step 10" in text
    assert "loss=wgan" in text and "failed: no such loss" in text and "its samples/ folder holds none" in text


def test_pages_load_every_image_in_chromium(runs, tmp_path):
    render = _render_pages()
    if render.find_chromium() is None:
        pytest.skip(
            "no chromium binary on this machine (apt-get update && apt-get install -y chromium): the browser check is skipped"
        )
    compare_html, _ = write_comparison(list(runs), tmp_path / "cmp", n=2)
    for page in (runs[0] / REPORT_FILE, compare_html):
        loaded, total = render.images_loaded(page)
        assert total == images(page.read_text()) > 0
        assert loaded == total, f"{page}: {loaded}/{total} images loaded"
    shot = render.screenshot(runs[0] / REPORT_FILE, tmp_path / "report.png", width=1000, height=800)
    with Image.open(shot) as image:
        assert image.size == (1000, 800)
