"""The [train] threads setting: the core's default and numbers, and the adaptive-threads plugin's automatic choice,
which reads the real /proc/stat and this process's affinity."""

import itertools
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, write_recipe
from dalle_kit import threads
from dalle_kit_plugins.common import cpuload
from dalle_kit_plugins.events import adaptive_threads
from dalle_kit.checkpoint import list_checkpoints, load_state


@pytest.mark.parametrize(
    "usable, others, expected",
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.9, 1), (2, 1.6, 1), (2, 5.0, 1), (8, 2.2, 6), (4, None, 4)],
)
def test_free_cpus(usable, others, expected):
    assert cpuload.free_cpus(usable, others) == expected


def test_usable_cpus_is_the_affinity_at_most():
    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_cpu_load_sees_a_busy_process_and_not_this_one():
    load = cpuload.CpuLoad()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # this process busy: not counted as another's load
        pass
    quiet = load.others()
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(1.0)
        load.others()
        time.sleep(1.0)
        busy = load.others()
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and quiet is not None
    assert busy > 0.6  # the spinner keeps one core busy (plus whatever else runs here)
    assert quiet < threads.usable_cpus() + 0.5  # this process's own spinning is not counted as another's


def test_explicit_environment_and_numbers_win(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        policy = threads.Threads("auto")
        assert policy.start() == before  # left as the environment made it
        adaptive_threads.train_start(FakeTrainer(policy))
        assert policy.count == before and torch.get_num_threads() == before  # the plugin leaves it too
        policy = threads.Threads(1)
        assert policy.start() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def trained_state(recipe, runs, run_cli, *extra) -> dict:
    code, _, err = run_cli("run", str(recipe), "--runs-dir", str(runs), "-q", "--stop-at", "10", *extra)
    assert code == 0, err
    (run_dir,) = runs.iterdir()
    ((_, path),) = list_checkpoints(run_dir / "checkpoints")
    return load_state(path)


def test_default_threads_give_the_same_weights_whatever_the_load(tmp_path, run_cli, monkeypatch):
    """The default ("cpus") does not look at the load: a run beside processes that keep every CPU busy ends with
    the same weights, bit for bit, as the same run on its own."""
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = torch.get_num_threads()
    recipe = write_recipe(tmp_path, TINY.replace("every = 15", "every = 0"))
    try:
        alone = trained_state(recipe, tmp_path / "alone", run_cli)
        spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(threads.usable_cpus())]
        try:
            load = cpuload.CpuLoad()
            time.sleep(0.5)
            assert load.others() >= 0.5 * len(spin)  # every CPU busy: "auto" would have taken one thread
            busy = trained_state(recipe, tmp_path / "busy", run_cli)
        finally:
            for process in spin:
                process.kill()
    finally:
        torch.set_num_threads(before)
    assert alone["trainer"]["threads"] == busy["trainer"]["threads"] == threads.usable_cpus()
    assert alone["models"].keys() == busy["models"].keys()
    for model, weights in alone["models"].items():
        assert weights.keys() == busy["models"][model].keys()
        for name, tensor in weights.items():
            assert torch.equal(tensor, busy["models"][model][name]), f"{model}.{name}"


def test_auto_is_saved_and_reused_on_resume(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = torch.get_num_threads()
    recipe = write_recipe(tmp_path, TINY.replace("every = 15", "every = 0"))
    code, _, err = run_cli(
        "run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q", "--stop-at", "10", "--set", "train.threads=auto"
    )
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    ((_, path),) = list_checkpoints(run_dir / "checkpoints")
    chosen = load_state(path)["trainer"]["threads"]
    assert 1 <= chosen <= threads.usable_cpus()
    assert torch.get_num_threads() == before  # the caller's count is back after training
    # A resumed run takes the saved count without looking at the load again.
    monkeypatch.setattr(cpuload.CpuLoad, "others", lambda self: pytest.fail("auto looked at the load on resume"))
    seen = []
    real_set = threads.Threads.set
    monkeypatch.setattr(threads.Threads, "set", lambda self, count: (seen.append(count), real_set(self, count)))
    code, _, err = run_cli("run", "--resume", str(run_dir), "-q")
    assert code == 0, err
    assert seen == [chosen]
    ((_, path),) = list_checkpoints(run_dir / "checkpoints")[-1:]
    assert load_state(path)["trainer"]["threads"] == chosen


def scripted_load(monkeypatch, loads):
    """Make the load look like `loads` (other processes' busy cores), one value a look, on 2 usable CPUs, looking
    again at every step."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpuload, "ADAPT_SECONDS", 0.0)
    monkeypatch.setattr(cpuload, "SAMPLE_SECONDS", 0.0)
    monkeypatch.setattr(cpuload, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    values = iter(loads)
    monkeypatch.setattr(cpuload.CpuLoad, "others", lambda self: next(values))


class FakeTrainer:
    """What the plugin reads of a trainer: its `Threads`, and a run that records the rows it logs."""

    def __init__(self, policy):
        self.threads = policy
        self.rows: list[dict] = []
        self.run = self

    def log(self, step, **row):
        self.rows.append({"step": step, **row})


def started(setting, saved=None) -> FakeTrainer:
    """A trainer whose threads the core started (`Threads.start`) and the plugin took over (``train_start``)."""
    trainer = FakeTrainer(threads.Threads(setting, saved))
    trainer.threads.start()
    adaptive_threads.train_start(trainer)
    return trainer


def adapt(trainer, step=1):
    """One training step's look at the load: the new count when it changed, else None."""
    before = trainer.threads.count
    adaptive_threads.train_step_end(trainer, step, {})
    return trainer.threads.count if trainer.threads.count != before else None


@pytest.mark.parametrize("setting", ["auto", "adaptive"])
def test_auto_follows_the_load(monkeypatch, setting):
    before = torch.get_num_threads()
    try:
        scripted_load(monkeypatch, [0.0, 1.4, 1.3, 0.2, 0.1])
        trainer = started(setting)
        assert trainer.threads.count == 2  # alone: every usable CPU
        assert adapt(trainer) == 1 and torch.get_num_threads() == 1  # a newcomer keeps one core busy
        assert adapt(trainer) is None  # still there: no change
        assert adapt(trainer, 3) == 2 and torch.get_num_threads() == 2  # gone: back to full speed
        assert adapt(trainer) is None
        assert [(r["step"], r["threads"]) for r in trainer.rows] == [(1, 1), (3, 2)]
    finally:
        torch.set_num_threads(before)


def test_once_keeps_its_first_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        scripted_load(monkeypatch, [1.2, 0.0, 0.0])
        trainer = started("once")
        assert trainer.threads.count == 1
        assert adapt(trainer) is None and adapt(trainer) is None and torch.get_num_threads() == 1
        monkeypatch.setattr(cpuload.CpuLoad, "others", lambda self: pytest.fail("once looked at the load on resume"))
        resumed = started("once", saved=1)
        assert resumed.threads.count == 1 and adapt(resumed) is None
    finally:
        torch.set_num_threads(before)


def test_a_resumed_auto_run_starts_with_its_count_then_follows_the_load(monkeypatch):
    before = torch.get_num_threads()
    try:
        scripted_load(monkeypatch, [0.0])  # the first look is the first adapt, not the start
        trainer = started("auto", saved=1)
        assert trainer.threads.count == 1
        assert adapt(trainer) == 2
    finally:
        torch.set_num_threads(before)


def test_a_change_of_count_is_logged_and_saved(tmp_path, run_cli, monkeypatch):
    scripted_load(monkeypatch, itertools.chain([0.0], itertools.repeat(1.5)))  # alone at the start, then not
    before = torch.get_num_threads()
    recipe = write_recipe(tmp_path, TINY.replace("every = 15", "every = 0"))
    code, _, err = run_cli(
        "run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q", "--stop-at", "6", "--set", "train.threads=auto"
    )
    assert code == 0, err
    assert torch.get_num_threads() == before
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    changes = [r for r in rows if r["kind"] == "threads"]
    assert changes == [{"step": 1, "kind": "threads", "time": changes[0]["time"], "threads": 1, "setting": "auto"}]
    ((_, path),) = list_checkpoints(run_dir / "checkpoints")[-1:]
    assert load_state(path)["trainer"]["threads"] == 1
