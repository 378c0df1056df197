"""The built-in tensorboard plugin: TensorBoard's own reader finds a run's losses, metrics (with protocol) and sample
grids; a resumed run purges what came after its checkpoint; ``[log] tensorboard = false`` writes nothing."""

from __future__ import annotations

import torch
from conftest import TINY, write_recipe

from dalle_kit import api
from dalle_kit.tools.evaluate import evaluate_run

BODY = TINY.replace("steps = 30", "steps = 20") + '\n[eval]\nmetrics = ["d-roc-auc"]\nnum_samples = 16\nevery = 10\n'


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_reads_losses_metrics_and_grids(tmp_path):
    run = api.train(str(write_recipe(tmp_path, BODY)), runs_dir=tmp_path / "runs", quiet=True)
    events = _events(run.dir)
    tags = events.Tags()
    assert {"train/loss_d", "train/loss_g", "train/lr", "eval/d-roc-auc/d_roc_auc"} <= set(tags["scalars"]), tags
    assert [e.step for e in events.Scalars("train/loss_d")] == [5, 10, 15, 20]
    assert {e.value for e in events.Scalars("train/threads")} == {torch.get_num_threads()}  # conftest pins it
    assert [e.step for e in events.Scalars("eval/d-roc-auc/d_roc_auc")] == [10, 20]  # mid-run and final
    assert [e.step for e in events.Images("samples")] == [15, 20]
    assert events.Images("samples")[0].width > 0
    assert any("eval/d-roc-auc/protocol" in t for t in tags["tensors"])


def test_final_scores_survive_event_file_names_that_sort_backwards(tmp_path, monkeypatch):
    """Two writers opened in one second by a process that opened nine before: ``….10`` sorts before ``….9``, and
    TensorBoard, reading files in name order, dropped the final evaluation (seen in CI). The final scores go in
    the training's own file."""
    from tensorboard.summary.writer import event_file_writer

    now = event_file_writer.time.time()
    monkeypatch.setattr(event_file_writer, "time", type("FrozenClock", (), {"time": staticmethod(lambda: now)}))
    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))
    run = api.train(str(write_recipe(tmp_path, BODY)), runs_dir=tmp_path / "runs", quiet=True)
    assert [e.step for e in _events(run.dir).Scalars("eval/d-roc-auc/d_roc_auc")] == [10, 20]


def test_a_new_event_file_sorts_after_the_folders_newest(tmp_path, monkeypatch):
    """A writer opened in the second of the folder's newest file (here a second ahead, as when a resume follows at
    once) waits for a later second, so that its name sorts after that file's whatever its counter."""
    import time

    from tensorboard.summary.writer import event_file_writer

    run = api.train(str(write_recipe(tmp_path, BODY)), runs_dir=tmp_path / "runs", quiet=True)
    folder = run.dir / "tensorboard"
    (folder / f"events.out.tfevents.{int(time.time()) + 1}.host.1.9").write_bytes(b"")
    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(10))
    evaluate_run(run, ["d-roc-auc"], num_samples=16)  # as `dalle-kit eval` does, in this process
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 3 and files[-1].endswith(".10"), files


def test_a_resumed_run_purges_the_replayed_stretch(tmp_path):
    run = api.train(str(write_recipe(tmp_path, BODY)), runs_dir=tmp_path / "runs", quiet=True)
    (
        run.checkpoints.folder / "step-00000020.safetensors"
    ).unlink()  # as if killed after logging 11-20: resume replays them
    api.train(resume=run.dir, quiet=True)
    events = _events(run.dir)
    assert [e.step for e in events.Scalars("train/loss_d")] == [5, 10, 15, 20]  # not 15 and 20 twice
    assert [e.step for e in events.Images("samples")] == [15, 20]


def test_switched_off_it_writes_nothing(tmp_path):
    run = api.train(
        str(write_recipe(tmp_path, BODY + "\n[log]\ntensorboard = false\n")), runs_dir=tmp_path / "runs", quiet=True
    )
    assert not (run.dir / "tensorboard").exists()
