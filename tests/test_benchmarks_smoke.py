"""The maintained benchmarks (benchmarks/*.py, helpers `_*.py` aside) run: each one's ``--smoke`` mode exits 0 and
prints its tables, and ``--record`` adds rows to the right table of a results file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
HEADER = "| date | machine | load | commit |"


def test_the_suite_is_small_and_every_benchmark_has_a_results_file():
    assert 0 < len(BENCHMARKS) <= 6, [p.name for p in BENCHMARKS]
    for script in BENCHMARKS:
        results = ROOT / "benchmarks" / "results" / (script.stem.replace("_", "-") + ".md")
        assert results.is_file(), f"{script.name} has no results file {results.name}"
        assert f"benchmarks/{script.name}" in results.read_text(), f"{results.name} does not name {script.name}"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_smoke(script, tmp_path):
    env = dict(os.environ, DALLE_KIT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540
    )  # under pytest-timeout's 600 s
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
    assert headers, done.stdout[-2000:]
    results = (ROOT / "benchmarks" / "results" / (script.stem.replace("_", "-") + ".md")).read_text().splitlines()
    for i in headers:  # every table: its header, the separator and at least one row with every column filled
        columns = lines[i].count("|")
        assert lines[i + 1].startswith("|---")
        assert lines[i + 2].startswith("| ") and lines[i + 2].count("|") == columns, lines[i + 2]
        assert ", smoke |" in lines[i + 2]
        # --record would append under the same heading of the results file: it must be there, with these columns
        heading = lines[i - 2]
        assert heading.startswith("## ") and heading in results, f"{heading!r} is not a heading of its results file"
        assert next(line for line in results[results.index(heading) :] if line.startswith("|")) == lines[i]


def test_record_appends_rows_under_the_table_of_the_same_heading(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _common import Table, emit

    results = tmp_path / "x.md"
    results.write_text(
        "# x\n\n## Speed\n\n| date | machine | load | commit | a | b |\n|---|---|---|---|---|---|\n"
        "| old | m | quiet | abc | 1 | 2 |\n\nNotes stay below the table.\n"
    )
    table = Table("Speed", ["a", "b"])
    table.add(3, 4)
    other = Table("Other", ["c"])
    other.add(5)
    emit("x", "protocol", [table, other], record=True, smoke=False, results=tmp_path)
    lines = results.read_text().splitlines()
    assert lines[6].startswith("| old |") and lines[7].endswith("| 3 | 4 |") and lines[8] == ""
    assert "Notes stay below the table." in lines
    assert lines[-3:-1] == ["| date | machine | load | commit | c |", "|---|---|---|---|---|"]
    assert lines[-1].endswith("| 5 |")
    with pytest.raises(SystemExit, match="never recorded"):
        emit("x", "protocol", [table], record=True, smoke=True, results=tmp_path)
    with pytest.raises(SystemExit, match="other columns"):
        emit("x", "protocol", [Table("Speed", ["a"], [["1"]])], record=True, smoke=False, results=tmp_path)


def test_commit_is_marked_changed_by_code_not_by_recorded_rows(tmp_path, monkeypatch):
    """A results row names the commit that measured it; rows an earlier ``--record`` appended do not mark it
    "+changes", an edit to anything else does."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _common

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.md").write_text("# x\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    monkeypatch.setattr(_common, "ROOT", tmp_path)
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "benchmarks" / "results")
    clean = _common.commit()
    assert clean and "+changes" not in clean
    (tmp_path / "benchmarks" / "results" / "x.md").write_text("# x\n| a row |\n")
    assert _common.commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _common.commit() == clean + "+changes"
