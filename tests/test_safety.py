"""Nothing lost, nothing poisoned, nothing escapes: divergence, damaged checkpoints, signals, run names, locks,
`sample` limits and parts that fail to build. Every test works on real files, real processes and real signals."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import TINY, cli_subprocess, write_recipe
from dalle_kit import api
from dalle_kit.checkpoint import (
    WEIGHT_BOUND,
    CheckpointDamaged,
    _flatten,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    verify,
)
from dalle_kit.errors import UserError
from dalle_kit.recipe import load_recipe
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit.trainer import sampler

SHORT = ["train.steps=20", "train.checkpoint_every=10", "train.log_every=10", "sample.every=0"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Subprocesses started here use one thread each (the machine's cores are shared)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def one_line_error(code, out, err):
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("dalle-kit: error: ")
    return lines[0]


def steps(run_dir: Path) -> list[int]:
    return [s for s, _ in list_checkpoints(Path(run_dir) / "checkpoints")]


def finite(path: Path) -> bool:
    state = load_state(path)
    return all(
        torch.isfinite(t).all() for net in state["models"].values() for t in net.values() if t.is_floating_point()
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run with good checkpoints at steps 10 and 20 (each test copies it before damaging it)."""
    root = tmp_path_factory.mktemp("trained")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY)
    run = api.train(str(recipe), SHORT, runs_dir=root / "runs", quiet=True)
    assert steps(run.dir) == [10, 20]
    return run.dir


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    target = tmp_path / trained.name
    shutil.copytree(trained, target)
    return target


# ------------------------------------------------------------------------------------------ 1. divergence
def test_divergence_never_destroys_good_checkpoints(copy, run_cli, tmp_path):
    # the run diverges when resumed: a learning rate of 1e6 blows the weights up within a step or two
    recipe = copy / "recipe.toml"
    recipe.write_text(
        recipe.read_text().replace("steps = 20\n", "steps = 60\n").replace("lr = 0.0002", "lr = 1000000.0")
    )
    for _ in range(2):  # resumed twice: each time it stops, neither time does it save or prune
        line = one_line_error(*run_cli("run", "--resume", copy, "-q"))
        assert "not finite" in line or "diverged" in line, line
        assert "step-00000020.safetensors (step 20)" in line and ("not saved" in line or "without saving" in line), line
        assert steps(copy) == [10, 20]
    # the advice ends with a command that starts a new run from the recipe, at half the learning rate, from the last
    # good weights; the recipe check takes it as it is
    words = shlex.split(line.split(", e.g. ")[-1])
    start = words.index("run")
    assert words[start:] == ["run", str(recipe), "--set", "train.lr=500000", "--set", f"init_from={copy}"], line
    code, _, err = run_cli("recipe", "check", *words[start + 1 :])
    assert code == 0, err
    assert all(finite(p) for _, p in list_checkpoints(copy / "checkpoints"))
    # sample draws from the good weights: finite, not a black sheet
    out = tmp_path / "after.png"
    code, _, err = run_cli("sample", copy, "a red circle", "a blue square", "-n", "4", "-o", out)
    assert code == 0, err
    grid = torch.from_numpy(np.asarray(Image.open(out).convert("L"), dtype=np.float32))
    assert grid.std() > 10
    run = Run.open(copy, get_registry(), quiet=True)
    images = sampler(run)(["a red circle"] * 8, torch.Generator().manual_seed(0))
    assert torch.isfinite(images).all() and images.mean() > -0.9 and images.std() > 0  # a poisoned net draws black (-1)


@pytest.mark.parametrize("poison", ["nan", "inf", "bound"])
def test_save_checkpoint_refuses_a_poisoned_state(copy, poison):
    run = Run.open(copy, get_registry(), quiet=True)
    good = load_state(latest_checkpoint(run.checkpoints.folder)[1])
    weight = (
        good["models"]["generator"]["fc.weight"]
        if "fc.weight" in good["models"]["generator"]
        else next(t for t in good["models"]["generator"].values() if t.is_floating_point())
    )
    weight.view(-1)[3] = {"nan": math.nan, "inf": -math.inf, "bound": 10 * WEIGHT_BOUND}[poison]
    good.pop("step")
    with pytest.raises(UserError) as caught:
        run.checkpoints.save(30, good)
    message = str(caught.value)
    assert "\n" not in message and "step 30" in message and "models/generator/" in message
    assert "step-00000020.safetensors (step 20)" in message
    assert steps(copy) == [10, 20], "a poisoned state was written or a good checkpoint pruned"
    assert not list(run.checkpoints.folder.glob(".*tmp*"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=nan", "lr"),
        ("train.lr=inf", "lr"),
        ("train.lr=-inf", "lr"),
        ("train.lr=0", "lr"),
        ("train.lr=-0.1", "lr"),
        ("train.lr_d=nan", "lr_d"),
        ("train.lr_d=0.0", "lr_d"),
        ("train.betas=[1.0, 0.9]", "betas"),
        ("train.betas=[-0.1, 0.9]", "betas"),
        ("train.betas=[0.5, nan]", "betas"),
        ("train.betas=[0.5, inf]", "betas"),
        ("train.betas=[0.5, 1]", "betas"),
        ("seed=-1", "seed"),
        ("seed=18446744073709551616", "seed"),
        ("seed=9223372036854775808", "seed"),
        ("seed=123456789012345678901234567890", "seed"),
    ],
)
def test_numbers_torch_would_reject_are_refused_at_check(run_cli, tiny_recipe, override, key):
    line = one_line_error(*run_cli("recipe", "check", tiny_recipe, "--set", override))
    assert f"key '{key}'" in line, line


@pytest.mark.parametrize(
    "recipe, override, key",
    [
        ("shapes-vae", "train.lr=nan", "lr"),
        ("shapes-vae", "train.betas=[0.9, 1.5]", "betas"),
        ("shapes-clip-pretrain", "train.lr=inf", "lr"),
        ("shapes-clip-pretrain", "train.weight_decay=nan", "weight_decay"),
    ],
)
def test_other_pipelines_refuse_bad_numbers(run_cli, recipe, override, key):
    path = Path(__file__).parent.parent / "recipes" / f"{recipe}.toml"
    line = one_line_error(*run_cli("recipe", "check", path, "--set", override))
    assert f"[train] key '{key}'" in line, line


def test_largest_seed_still_trains(run_cli, tiny_recipe, tmp_path):
    code, out, err = run_cli(
        "run",
        tiny_recipe,
        "--set",
        "seed=9223372036854775807",
        "--set",
        "train.steps=2",
        "--set",
        "sample.every=0",
        "--runs-dir",
        tmp_path / "runs",
        "-q",
    )
    assert code == 0, err


# ------------------------------------------------------------------------------------------ 2. integrity
def _truncate(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[-7] ^= 0xFF  # a byte of tensor data (the header is at the start)
    p.write_bytes(bytes(data))


def _garbage_header(p: Path):
    data = bytearray(p.read_bytes())
    data[8:40] = b"#" * 32  # the JSON header no longer parses
    p.write_bytes(bytes(data))


def _huge_header_length(p: Path):
    data = bytearray(p.read_bytes())
    data[:8] = (2**60).to_bytes(8, "little")
    p.write_bytes(bytes(data))


def _foreign(p: Path):
    save_file({"weight": torch.ones(3, 3)}, str(p), metadata={"format": "pt"})


def _random_bytes(p: Path):
    p.write_bytes(os.urandom(4096))


def _directory(p: Path):
    p.unlink()
    p.mkdir()


def _dangling_link(p: Path):
    p.unlink()
    p.symlink_to(p.parent / "nowhere.safetensors")


DAMAGE = {
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "flipped-data": _flip,
    "garbage-header": _garbage_header,
    "huge-header-length": _huge_header_length,
    "foreign": _foreign,
    "random": _random_bytes,
    "directory": _directory,
    "dangling-link": _dangling_link,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back(copy, run_cli, tmp_path, kind):
    newest = copy / "checkpoints" / "step-00000020.safetensors"
    DAMAGE[kind](newest)
    with pytest.raises(CheckpointDamaged) as caught:
        verify(newest)
    assert "\n" not in str(caught.value)
    with pytest.warns(UserWarning) as warned:
        code, out, err = run_cli("sample", copy, "a red circle", "-n", "2", "-o", tmp_path / "s.png")
    assert code == 0, err
    lines = [str(w.message) for w in warned if "damaged" in str(w.message)]
    assert (
        len(lines) == 1
        and "step-00000020.safetensors" in lines[0]
        and "step-00000010.safetensors (step 10)" in lines[0]
    )
    assert "\n" not in lines[0]


def test_resume_and_eval_fall_back_and_warn_on_stderr(copy, tmp_path):
    _flip(copy / "checkpoints" / "step-00000020.safetensors")
    # eval: a real process; the warning is one stderr line naming the damaged file and the one used
    done = cli_subprocess("eval", str(copy), "-m", "d-roc-auc", "-n", "32")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("dalle-kit: warning:")]
    assert len(warnings) == 1 and "step-00000020.safetensors: damaged checkpoint" in warnings[0], done.stderr
    assert "using" in warnings[0] and "step-00000010.safetensors (step 10)" in warnings[0]
    row = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["kind"] == "eval" and row["step"] == 10
    # resume: continues from step 10 and writes a good step 20 over the damaged one
    with pytest.warns(UserWarning, match="damaged checkpoint"):
        run = api.train(resume=copy, quiet=True)
    assert steps(run.dir) == [10, 20] and verify(copy / "checkpoints" / "step-00000020.safetensors") is True


def test_no_good_checkpoint_is_one_line(copy, run_cli, tmp_path):
    _truncate(copy / "checkpoints" / "step-00000020.safetensors")
    _foreign(copy / "checkpoints" / "step-00000010.safetensors")
    for args in (
        ("sample", copy, "a red circle", "-o", tmp_path / "x.png"),
        ("run", "--resume", copy, "-q"),
        ("eval", copy, "-m", "d-roc-auc", "-n", "8"),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning line per damaged file before the error: one line in all
            line = one_line_error(*run_cli(*args))
        assert "no usable checkpoint" in line and "step-00000020.safetensors" in line and "step-00000010" in line
    done = cli_subprocess("sample", str(copy), "a red circle", "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x.png").exists()


def test_checkpoints_carry_a_digest_and_old_ones_still_load(copy, run_cli, tmp_path, recwarn):
    newest = copy / "checkpoints" / "step-00000020.safetensors"
    assert verify(newest) is True
    # a checkpoint as written before digests existed: the same tree, no digest -> accepted unverified
    tensors: dict = {}
    tree = _flatten(load_state(newest), "", tensors)
    os.unlink(newest)
    save_file(tensors, str(newest), metadata={"dalle_kit.tree": json.dumps(tree)})
    assert verify(newest) is False
    code, out, err = run_cli("sample", copy, "a red circle", "-n", "2", "-o", tmp_path / "old.png")
    assert code == 0, err
    assert not [w for w in recwarn if "damaged" in str(w.message)]
    # loaded, but not silently: one warning line says it was not verified
    unverified = [str(w.message) for w in recwarn if "no digest" in str(w.message)]
    assert len(unverified) == 1 and "step-00000020.safetensors" in unverified[0] and "unverified" in unverified[0]


def test_stale_temporaries_are_removed_when_a_run_is_opened(copy):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ckpts = copy / "checkpoints"
    partial = (ckpts / "step-00000020.safetensors").read_bytes()[:1000]
    stale = [
        ckpts / f".step-00000030.safetensors.tmp-{dead.pid}",
        copy / f".metrics.jsonl.tmp-{dead.pid}",
        ckpts / f".step-00000040.safetensors.tmp-{os.getpid()}",
    ]
    for p in stale:
        p.write_bytes(partial)
    live = ckpts / ".step-00000050.safetensors.tmp-1"  # pid 1 is alive: its writer may still be at work
    live.write_bytes(partial)
    keep = ckpts / "notes.tmp-123"  # not a dalle-kit temporary name
    keep.write_text("mine")
    Run.open(copy, get_registry(), quiet=True)
    assert not [p for p in stale if p.exists()]
    assert live.exists() and keep.exists() and steps(copy) == [10, 20]


# ------------------------------------------------------------------------------------------ 3 + 5. signals and the lock
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_checkpoints_and_resume_continues(tiny_recipe, tmp_path, run_cli, signum):
    runs = tmp_path / "runs"
    exe = Path(sys.executable).parent / "dalle-kit"
    proc = subprocess.Popen(
        [
            str(exe),
            "run",
            str(tiny_recipe),
            "--runs-dir",
            str(runs),
            "-q",
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=10",
            "--set",
            "sample.every=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*/checkpoints/step-00000010.safetensors")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no first checkpoint within 2 minutes"
            time.sleep(0.2)
        run_dir = next(runs.iterdir())
        # 5: a second trainer of the same run is refused while the first holds the lock
        line = one_line_error(*run_cli("run", "--resume", run_dir, "-q"))
        assert "in use by another process" in line and f"pid {proc.pid} holds" in line
        assert f"or kill {proc.pid}; training stops with a checkpoint" in line, line  # the pid, not a PID placeholder
        # and so is an evaluation, whose rows the trainer's resume would rewrite
        line = one_line_error(*run_cli("eval", run_dir, "-m", "d-roc-auc", "-n", "8"))
        assert "in use by another process" in line and f"pid {proc.pid} holds" in line
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped at step" in out, out
    stopped = int(out.split("stopped at step ")[1].split(";")[0])
    assert steps(run_dir)[-1] == stopped >= 10
    # the lock went with the process; resume continues from the stop step
    code, out, err = run_cli("run", "--resume", run_dir, "-q", "--stop-at", str(stopped + 3))
    assert code == 0, err
    assert steps(run_dir)[-1] == stopped + 3
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] <= stopped + 3


def test_final_checkpoint_comes_before_the_final_grid(tiny_recipe, tmp_path):
    run = api.train(
        str(tiny_recipe),
        ["train.steps=12", "train.checkpoint_every=10", "sample.every=0"],
        stop_at=10,
        runs_dir=tmp_path / "runs",
        quiet=True,
    )
    (run.dir / "samples").write_text("in the way")  # a file where the grid's folder goes: the final grid fails
    with pytest.raises(UserError, match="samples is a file, not a folder"):
        api.train(resume=run.dir, quiet=True)
    assert steps(run.dir)[-1] == 12, "the final checkpoint was lost to an error in the final sample grid"
    assert not (run.dir / ".lock").exists() or _lock_free(run.dir / ".lock")


def test_a_runs_dir_that_is_a_file_is_named_once(tiny_recipe, tmp_path, run_cli):
    (tmp_path / "afile").write_text("in the way")
    line = one_line_error(*run_cli("run", tiny_recipe, "--runs-dir", tmp_path / "afile", "-q"))
    assert line.endswith(f"{tmp_path / 'afile'}: is a file, not a folder; name a folder (it is made if missing)")
    line = one_line_error(*run_cli("run", tiny_recipe, "--runs-dir", tmp_path / "afile" / "runs", "-q"))
    assert f"runs: {tmp_path / 'afile'} is a file, not a folder; name a path inside a folder" in line, line


def _lock_free(path: Path) -> bool:
    import fcntl

    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------------------------ 4. run names
BAD_NAMES = [
    "../../x",
    "../x",
    "a/b",
    "/abs",
    "x\\u0000y",
    "n" * 300,
    "n" * 101,
    "café",
    "ｆｕｌｌ",
    "Δ",
    ".hidden",
    "..",
    "-dash",
    "",
    " ",
    "a b",
    "tab\\there",
    "new\\nline",
    "back\\\\slash",
    "semi;colon",
    "star*",
    "quote'",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused(run_cli, tmp_path, name):
    path = write_recipe(tmp_path, TINY.replace('name = "tiny"', f'name = "{name}"'))
    line = one_line_error(*run_cli("recipe", "check", path))
    assert "key 'name'" in line and "not a usable run name" in line
    line = one_line_error(*run_cli("run", path, "--runs-dir", tmp_path / "runs"))
    assert "key 'name'" in line
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


@pytest.mark.parametrize("name", ["a", "tiny", "My_Run.v2", "shapes-clip-pretrain", "x" * 100, "_private", "3"])
def test_good_run_names_pass(run_cli, tmp_path, name):
    path = write_recipe(tmp_path, TINY.replace('name = "tiny"', f'name = "{name}"'))
    code, out, err = run_cli("recipe", "check", path)
    assert code == 0, err


def test_run_directory_stays_inside_the_runs_folder(tmp_path):
    recipe_path = write_recipe(tmp_path, TINY.replace('name = "tiny"', 'name = "../escape"'))
    recipe = load_recipe(recipe_path, get_registry(), check_name=False)  # as if validation had been bypassed
    with pytest.raises(UserError, match="outside"):
        Run.create(recipe, get_registry(), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("escape*"))


# ------------------------------------------------------------------------------------------ 5. sample limits
@pytest.mark.parametrize(
    "args, expected",
    [
        (["a red circle", "-o", "{dir}"], "is a directory"),
        (["a red circle", "-n", "1025"], "at most 1024"),
        (["a red circle", "a blue square", "-n", "600"], "= 1200 images"),
        (["a red circle"] * 1025 + ["-n", "1"], "at most 1024"),
        ([""], "prompt 1 is empty"),
        (["a red circle", "   "], "prompt 2 is empty"),
        (["\t\n"], "prompt 1 is empty"),
        (["a red circle", "-n", "0"], "at least one image"),
        (["a red circle", "-n", "-3"], "at least one image"),
    ],
)
def test_sample_refuses(trained, run_cli, tmp_path, args, expected):
    target = tmp_path / "out"
    target.mkdir()
    before = sorted(p.name for p in trained.rglob("*"))
    args = [a.replace("{dir}", str(target)) for a in args]
    line = one_line_error(*run_cli("sample", trained, *args))
    assert expected in line, line
    assert list(target.iterdir()) == [] and sorted(p.name for p in trained.rglob("*")) == before


# ------------------------------------------------------------------------------------------ 6. parts that fail to build
RECIPES = Path(__file__).parent.parent / "recipes"


@pytest.mark.parametrize(
    "recipe, size, part",
    [
        (None, 48, "dcgan"),
        (None, 24, "dcgan"),
        (RECIPES / "shapes-resnet-hinge.toml", 48, "resnet"),
        (RECIPES / "shapes-vae.toml", 40, "vae-decoder"),
    ],
)
def test_part_that_fails_to_build_is_one_line_before_any_directory(run_cli, tiny_recipe, tmp_path, recipe, size, part):
    recipe = recipe or tiny_recipe
    line = one_line_error(*run_cli("recipe", "check", recipe, "--set", f"data.size={size}"))
    assert "[generator]" in line and f"'{part}'" in line and "dalle-kit" in line and "ValueError" in line
    assert f"power-of-two image size >= 8, got {size}" in line
    line = one_line_error(*run_cli("run", recipe, "--set", f"data.size={size}", "--runs-dir", tmp_path / "runs"))
    assert "[generator]" in line and "power-of-two" in line
    assert not (tmp_path / "runs").exists()


def test_models_the_pipeline_builds_itself_are_checked_before_any_directory(run_cli, tmp_path, monkeypatch):
    """A pipeline's own models (the vae's image encoder) are not parts the recipe names; `Pipeline.check` covers them."""
    from dalle_kit_plugins.vae.pipeline import VAE

    config = load_recipe(RECIPES / "shapes-vae.toml", get_registry()).train
    with pytest.raises(UserError, match=r"\[data\] size = 48: the vae pipeline's image encoder .* power of two"):
        VAE(config).check(48, 3, 32)
    VAE(config).check(32, 3, 32)
    # run and recipe check both ask the pipeline, after the parts the recipe names were built
    calls = []

    def refuse(self, image_size, channels, text_dim):
        calls.append((image_size, channels, text_dim))
        raise UserError(f"[data] size = {image_size}: refused by the pipeline")

    monkeypatch.setattr(VAE, "check", refuse)
    line = one_line_error(*run_cli("recipe", "check", RECIPES / "shapes-vae.toml"))
    assert "refused by the pipeline" in line
    line = one_line_error(*run_cli("run", RECIPES / "shapes-vae.toml", "--runs-dir", tmp_path / "runs"))
    assert "refused by the pipeline" in line and not (tmp_path / "runs").exists()
    assert calls and calls[0][:2] == (32, 3)


def test_traceback_flag_reraises(tiny_recipe, tmp_path):
    from dalle_kit.cli import main

    with pytest.raises(UserError) as caught:
        main(["--traceback", "recipe", "check", str(tiny_recipe), "--set", "data.size=48"])
    assert isinstance(caught.value.__cause__, ValueError)
    done = cli_subprocess(
        "--traceback", "run", str(tiny_recipe), "--set", "data.size=48", "--runs-dir", str(tmp_path / "runs")
    )
    assert (
        done.returncode != 0 and "Traceback" in done.stderr and "ValueError: dcgan needs a power-of-two" in done.stderr
    )
    assert not (tmp_path / "runs").exists()
