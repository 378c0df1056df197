"""Hostile files and full disks, on real files: no pickle is ever unpickled, no write goes through a link or
replaces a FIFO or a device, a full disk or a file-size limit is one line with the newest good checkpoint kept and
no temporary file left, and a refused recipe writes nothing."""

from __future__ import annotations

import os
import pickle
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, write_recipe
from dalle_kit import api
from dalle_kit.checkpoint import LIBRARY_TEMP_RE, list_checkpoints, verify

SHORT = ["train.steps=20", "train.checkpoint_every=10", "train.log_every=5", "sample.every=0"]
EXE = Path(sys.executable).parent / "dalle-kit"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the machine's cores are shared


def one_line_error(code, out, err) -> str:
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("dalle-kit: error: "), err
    return lines[0]


def crafted_pickle(path: Path, marker: Path, form: str = "torch") -> Path:
    """A file that runs ``touch MARKER`` when unpickled: a ``torch.save`` file or a bare pickle."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "torch":
        torch.save({"weight": torch.zeros(2), "payload": Payload()}, path)
    else:
        path.write_bytes(pickle.dumps(Payload()))
    return path


def temporaries(folder: Path) -> list[Path]:
    """Every temporary a write can leave: dalle-kit's own (``.NAME.tmp-PID``, file or folder) and safetensors'."""
    return [p for p in folder.rglob(".*") if re.search(r"\.tmp-\d+$", p.name) or LIBRARY_TEMP_RE.match(p.name)]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A tiny run stopped at step 10 of 20: one good checkpoint, resumable (each test copies it)."""
    root = tmp_path_factory.mktemp("stopped")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY)
    run = api.train(str(recipe), SHORT, stop_at=10, runs_dir=root / "runs", quiet=True)
    assert [s for s, _ in list_checkpoints(run.dir / "checkpoints")] == [10]
    return run.dir


@pytest.fixture
def copy(stopped, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(stopped, target)
    return target


# ------------------------------------------------------------------------------------------ 1. no unpickling
def eval_recipe(tmp_path: Path, extractor: str, weights: Path) -> Path:
    return write_recipe(
        tmp_path,
        TINY + f'\n[eval]\nmetrics = ["fid"]\nnum_samples = 8\n\n[eval.fid]\n'
        f'extractor = "{extractor}"\nweights = "{weights}"\n',
    )


@pytest.mark.parametrize("form", ["torch", "pickle"])
@pytest.mark.parametrize("extractor", ["inception-v3-compat", "auto"])
def test_crafted_inception_weights_in_a_recipe_never_run(run_cli, tmp_path, offline_inception, extractor, form):
    marker = tmp_path / "payload-ran"
    evil = crafted_pickle(tmp_path / "weights.pth", marker, form)
    recipe = eval_recipe(tmp_path, extractor, evil)
    line = one_line_error(*run_cli("run", recipe, "--runs-dir", tmp_path / "runs", "-q"))
    assert str(evil) in line and "nothing in it was run" in line, line
    assert line.endswith("weights-inception-2015-12-05-6726825d.pth"), line  # the message whole, not cut
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extractor", ["inception-v3-compat", "auto"])
def test_crafted_inception_weights_in_the_environment_never_run(
    copy, run_cli, tmp_path, monkeypatch, offline_inception, extractor
):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("DALLE_KIT_INCEPTION_WEIGHTS", str(crafted_pickle(tmp_path / "env.pth", marker)))
    with open(copy / "recipe.toml", "a") as f:
        f.write(f'\n[eval.fid]\nextractor = "{extractor}"\n')
    before = (copy / "metrics.jsonl").read_bytes()
    line = one_line_error(*run_cli("eval", copy, "-m", "fid", "-n", "8"))
    assert "env.pth" in line and "DALLE_KIT_INCEPTION_WEIGHTS" in line and "nothing in it was run" in line, line
    assert not marker.exists() and (copy / "metrics.jsonl").read_bytes() == before


def test_torch_fidelity_own_extractor_gets_the_tensors_not_the_file(tmp_path, offline_inception):
    """A real weights file for torch-fidelity's stock Inception: dalle-kit hands it the tensors (its loader would
    unpickle the file) and the features are exactly those of torch-fidelity given the file itself."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from dalle_kit_plugins.metrics import fidelity, inception
    from dalle_kit_plugins.data.shapes import Shapes

    weights = tmp_path / "inception.pth"
    torch.save(inception.fid_helper_standard_state(), weights)
    extractor = inception.resolve("inception-v3-compat", str(weights))
    assert extractor.weights_path == str(weights) and extractor.weights_hash  # the protocol names the file
    assert not isinstance(inception.weights_argument(extractor), (str, os.PathLike))
    images = Shapes(Shapes.Config(train_size=8, test_size=8)).load("test").images
    ours = fidelity.extract_features(images, extractor, 8, torch.device("cpu"))
    theirs_net = create_feature_extractor(
        "inception-v3-compat", ["2048"], cuda=False, verbose=False, feature_extractor_weights_path=str(weights)
    )
    theirs = get_featuresdict_from_dataset(inception.ImagesDataset(images), theirs_net, 8, False, True, False)["2048"]
    assert torch.isfinite(ours).all() and torch.equal(ours, theirs)


def shapes_evaluation(cache_root: Path, n: int = 8):
    from dalle_kit.evaluation import Evaluation
    from dalle_kit_plugins.data.shapes import Shapes

    shapes = Shapes(Shapes.Config(train_size=256, test_size=16))
    train = shapes.load("train")
    return Evaluation(
        shapes,
        num_samples=n,
        generated=train.images[:n],
        prompts=train.captions[:n],
        seed=1,
        cache_root=cache_root,
        metric_names=["fid"],
    )


def plant(files: list[Path], marker: Path) -> None:
    assert files, "the cache has no such entry"
    for path in files:
        os.replace(crafted_pickle(path.with_name("planted"), marker), path)


def test_crafted_pickle_as_the_reference_features_cache(tmp_path, offline_inception):
    from dalle_kit.tools.evaluate import compute_metrics
    from dalle_kit_plugins.metrics.fidelity import FID, CACHE_NAMESPACE, FEATURES_FILE, FidelityConfig

    marker, cache = tmp_path / "payload-ran", tmp_path / "cache"
    first = compute_metrics(shapes_evaluation(cache), {"fid": FID(FidelityConfig())})["fid"]
    plant(list((cache / CACHE_NAMESPACE).glob(f"*/{FEATURES_FILE}")), marker)
    again = compute_metrics(shapes_evaluation(cache), {"fid": FID(FidelityConfig())})["fid"]
    assert again.values == first.values and not marker.exists()  # recomputed, never unpickled
    assert all(verify_safetensors(p) for p in (cache / CACHE_NAMESPACE).glob(f"*/{FEATURES_FILE}"))


def verify_safetensors(path: Path) -> bool:
    from dalle_kit.tools.safe_load import safetensors_file

    return bool(safetensors_file(path))


def test_crafted_pickle_as_the_text_alignment_probe_cache(tmp_path):
    from dalle_kit_plugins.metrics.text_alignment import PROBE_FILE, ProbeSettings, load_or_train_probe

    marker, settings = tmp_path / "payload-ran", ProbeSettings(width=4, epochs=1, train_images=128)
    evaluation = shapes_evaluation(tmp_path / "cache")
    first, info = load_or_train_probe(evaluation, settings)
    plant(list((tmp_path / "cache" / "text-alignment-probe").glob(f"*/{PROBE_FILE}")), marker)
    again, info_again = load_or_train_probe(shapes_evaluation(tmp_path / "cache"), settings)
    assert not marker.exists() and info_again["weights_hash"] == info["weights_hash"]  # trained again, the same
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_crafted_pickle_as_the_class_accuracy_classifier_cache(tmp_path):
    from test_class_accuracy import FAST, Blocks, evaluate

    from dalle_kit_plugins.metrics.class_accuracy import NAMESPACE, WEIGHTS_FILE, ClassAccuracy

    marker = tmp_path / "payload-ran"
    blocks = Blocks(Blocks.Config())
    test = blocks.load("test")
    first = evaluate(blocks, test.images, test.captions, tmp_path, ClassAccuracy(ClassAccuracy.Config(**FAST)))
    plant(list((tmp_path / NAMESPACE).glob(f"*/{WEIGHTS_FILE}")), marker)
    again = evaluate(blocks, test.images, test.captions, tmp_path, ClassAccuracy(ClassAccuracy.Config(**FAST)))
    assert not marker.exists() and again.values == first.values and again.protocol == first.protocol


def test_crafted_object_array_as_the_imagefolder_cache(tmp_path, monkeypatch):
    from test_imagefolder import load_both, make_folder

    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("DALLE_KIT_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "imgs")
    _, train, _ = load_both(tmp_path / "imgs")
    arrays = list((tmp_path / "cache" / "imagefolder").glob("*/images.npy"))
    assert arrays

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for path in arrays:  # a .npy whose array is of objects: numpy would unpickle it with allow_pickle=True
        planted = path.with_name("planted.npy")  # a new file renamed over it: `train` still maps the old one
        np.save(planted, np.array([Payload(), 1], dtype=object), allow_pickle=True)
        os.replace(planted, path)
    _, again, _ = load_both(tmp_path / "imgs")
    assert not marker.exists() and torch.equal(again.images, train.images)


# ------------------------------------------------------------------------------------------ 2. no write through a link
def victim(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "victim.txt"
    data = os.urandom(1500)
    path.write_bytes(data)
    return path, data


LOCK_HAZARDS = {
    "symlink": lambda p, v: p.symlink_to(v),
    "dangling-symlink": lambda p, v: p.symlink_to(v.parent / "created-through-the-link"),
    "directory": lambda p, v: p.mkdir(),
    "fifo": lambda p, v: os.mkfifo(p),
    "hard-link": lambda p, v: os.link(v, p),
}


@pytest.mark.parametrize("hazard", sorted(LOCK_HAZARDS))
def test_lock_that_is_not_a_plain_file_is_refused(copy, run_cli, tmp_path, hazard):
    target, data = victim(tmp_path)
    lock = copy / ".lock"
    lock.unlink(missing_ok=True)
    LOCK_HAZARDS[hazard](lock, target)
    for args in (("eval", copy, "-m", "d-roc-auc", "-n", "8"), ("run", "--resume", copy, "-q")):
        line = one_line_error(*run_cli(*args))
        assert str(lock) in line, line
    assert target.read_bytes() == data and not (tmp_path / "created-through-the-link").exists()
    assert [s for s, _ in list_checkpoints(copy / "checkpoints")] == [10]  # nothing trained


@pytest.mark.parametrize("name", ["metrics.jsonl", "recipe.toml"])
def test_run_files_that_are_links_are_refused_before_any_work(copy, run_cli, tmp_path, name):
    target, data = victim(tmp_path)
    (copy / name).rename(tmp_path / name)
    (copy / name).symlink_to(tmp_path / name if name == "recipe.toml" else target)
    line = one_line_error(*run_cli("eval", copy, "-m", "d-roc-auc", "-n", "8"))
    assert str(copy / name) in line and "symbolic link" in line, line
    assert target.read_bytes() == data


def test_checkpoints_folder_that_is_a_link_is_refused(copy, run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (copy / "checkpoints").rename(elsewhere)
    (copy / "checkpoints").symlink_to(elsewhere)
    line = one_line_error(*run_cli("run", "--resume", copy, "-q"))
    assert str(copy / "checkpoints") in line and "symbolic link" in line, line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["step-00000010.safetensors"]


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # the numbers of /dev/null, in tmp_path
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")


SAMPLE_HAZARDS = {
    "fifo": (lambda p, v: os.mkfifo(p), "is a FIFO"),
    "symlink": (lambda p, v: p.symlink_to(v), "symbolic link"),
    "dangling-symlink": (lambda p, v: p.symlink_to(v.parent / "created-through-the-link"), "symbolic link"),
    "device": (lambda p, v: _device(p), "character device"),
    "under-a-file": (None, "is a file, not a folder"),
}


@pytest.mark.parametrize("hazard", sorted(SAMPLE_HAZARDS))
def test_sample_output_that_is_not_a_plain_file_is_refused_before_drawing(copy, run_cli, tmp_path, hazard, monkeypatch):
    target, data = victim(tmp_path)
    make, expected = SAMPLE_HAZARDS[hazard]
    out = tmp_path / "out.png"
    if make is None:
        out = target / "sample.png"  # a folder path under a regular file
    else:
        make(out, target)
    mode = os.lstat(out).st_mode if make is not None else None
    from dalle_kit.run import Run

    monkeypatch.setattr(Run, "open", lambda *a, **k: pytest.fail("opened the run before checking -o"))
    line = one_line_error(*run_cli("sample", copy, "a red circle", "-n", "2", "-o", out))
    assert str(out) in line and expected in line, line
    assert target.read_bytes() == data and not (tmp_path / "created-through-the-link").exists()
    if mode is not None:
        assert os.lstat(out).st_mode == mode  # still the FIFO, the link, the device: not replaced
    assert not temporaries(tmp_path)


def test_default_outputs_in_a_run_that_are_links_are_refused(copy, run_cli, tmp_path):
    target, data = victim(tmp_path)
    (copy / "sample.png").symlink_to(target)
    line = one_line_error(*run_cli("sample", copy, "a red circle", "-n", "2"))
    assert str(copy / "sample.png") in line and "symbolic link" in line
    (copy / "report.html").unlink(missing_ok=True)
    (copy / "report.html").symlink_to(target)
    line = one_line_error(*run_cli("report", copy))
    assert str(copy / "report.html") in line and "symbolic link" in line
    out = tmp_path / "report-link.html"
    out.symlink_to(target)
    line = one_line_error(*run_cli("report", copy, "-o", out))
    assert str(out) in line and "symbolic link" in line
    assert target.read_bytes() == data


# ------------------------------------------------------------------------------------------ 3. full disks
def resume_process(run_dir: Path, *extra: str, limit: int | None = None) -> subprocess.CompletedProcess:
    """``dalle-kit run --resume RUN_DIR --stop-at 20`` in a process of its own, under a file-size limit if given
    (SIGXFSZ ignored, so that a write past it fails with EFBIG instead of killing the process)."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [str(EXE), "run", "--resume", str(run_dir), "-q", "--stop-at", "20", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size if limit else None,
    )


def assert_failed_write_kept_the_good_checkpoint(done, run_dir: Path, problem: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    line = lines[0]
    assert "step-00000020.safetensors" in line and problem in line and re.search(r"needs [\d,]+ bytes", line), line
    assert "step-00000010.safetensors (step 10), kept" in line and f"dalle-kit run --resume {run_dir}" in line, line
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [10]
    assert verify(run_dir / "checkpoints" / "step-00000010.safetensors") is True  # intact, digest and all
    assert not temporaries(run_dir), temporaries(run_dir)


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 48 MiB tmpfs mounted in tmp_path (skipped where mounting is not allowed)."""
    where = tmp_path / "tmpfs"
    mount_tmpfs(where, "size=48m")
    try:
        yield where
    finally:
        unmount(where)


def test_checkpoint_write_into_a_full_disk(stopped, tmpfs):
    run_dir = tmpfs / "run"
    shutil.copytree(stopped, run_dir)
    size = (run_dir / "checkpoints" / "step-00000010.safetensors").stat().st_size
    st = os.statvfs(tmpfs)
    filler = st.f_bavail * st.f_frsize - size // 2  # room for the logs and a grid, not for another checkpoint
    with open(tmpfs / "filler", "wb") as f:
        f.write(b"\0" * filler)
    done = resume_process(run_dir)
    assert_failed_write_kept_the_good_checkpoint(done, run_dir, "no space left on the device")
    # with room again, the run continues from the kept checkpoint
    (tmpfs / "filler").unlink()
    api.train(resume=run_dir, stop_at=20, quiet=True)
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [10, 20]


def test_checkpoint_write_past_a_file_size_limit(copy):
    size = (copy / "checkpoints" / "step-00000010.safetensors").stat().st_size
    done = resume_process(copy, limit=size // 2)
    assert_failed_write_kept_the_good_checkpoint(done, copy, "file too large")


def test_a_read_only_file_system_is_one_line_before_drawing(copy, run_cli, tmp_path, monkeypatch):
    from dalle_kit.run import Run

    where = tmp_path / "read-only"
    mount_tmpfs(where, "ro,size=1m")
    monkeypatch.setattr(Run, "open", lambda *a, **k: pytest.fail("opened the run before checking -o"))
    try:
        out = where / "sample.png"
        line = one_line_error(*run_cli("sample", copy, "a red circle", "-n", "2", "-o", out))
        assert str(out) in line and "read-only file system" in line, line
    finally:
        unmount(where)


# ------------------------------------------------------------------------------------------ 4. killed writers
def kill_inside_write(code: str, folder: Path, pattern: re.Pattern, tries: int = 5) -> Path:
    """Run `code` in a process and SIGKILL it as soon as a name matching `pattern` appears in `folder` (retried with
    the process started afresh if it finished first); returns the temporary it left."""
    for _ in range(tries):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                left = [p for p in folder.iterdir() if pattern.match(p.name)]
                if left:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return left[0]
                time.sleep(0.0002)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for p in folder.iterdir():  # it finished first: start over
            if p.name.startswith("step-00000030"):
                p.unlink()
    pytest.fail(f"the write finished before it could be killed {tries} times")


BIG = "{'x': torch.arange(16_000_000, dtype=torch.float32)}"


def test_kill_inside_the_librarys_own_write_leaves_nothing_on_the_next_start(copy, tmp_path):
    """A process killed inside safetensors' save_file leaves its ``.tmpXXXXXX`` beside the target (as dalle-kit's
    checkpoints once did); the next start of the run removes it and resumes from the good checkpoint."""
    ckpts = copy / "checkpoints"
    code = (
        f"import torch; from safetensors.torch import save_file; "
        f"save_file({BIG}, {str(ckpts / 'step-00000030.safetensors')!r})"
    )
    left = kill_inside_write(code, ckpts, LIBRARY_TEMP_RE)
    assert left.is_file() and [s for s, _ in list_checkpoints(ckpts)] == [10]
    api.train(resume=copy, stop_at=20, quiet=True)
    assert not left.exists() and not temporaries(copy)
    assert [s for s, _ in list_checkpoints(ckpts)] == [10, 20]


def test_kill_inside_a_library_write_by_name_leaves_one_folder_removed_on_the_next_start(copy):
    """`dalle_kit.files.atomic_write` gives a writer that saves by name a path in a private folder: whatever the
    library leaves there when killed goes with that folder when the run is next opened."""
    ckpts = copy / "checkpoints"
    code = (
        f"import torch; from pathlib import Path; from safetensors.torch import save_file; "
        f"from dalle_kit.files import atomic_write; "
        f"atomic_write(Path({str(ckpts / 'step-00000030.safetensors')!r}), lambda tmp: save_file({BIG}, str(tmp)))"
    )
    folder = kill_inside_write(code, ckpts, re.compile(r"^\.step-00000030\.safetensors\.tmp-\d+$"))
    assert folder.is_dir()
    from dalle_kit.registry import get_registry
    from dalle_kit.run import Run

    Run.open(copy, get_registry(), quiet=True)
    assert not folder.exists() and not temporaries(copy)


# ------------------------------------------------------------------------------------------ 5. refused recipes write nothing
def refused_before_anything(run_cli, tmp_path, recipe, *overrides, expected=()):
    runs = tmp_path / "runs"
    sets = [a for o in overrides for a in ("--set", o)]
    check = one_line_error(*run_cli("recipe", "check", recipe, *sets))
    line = one_line_error(*run_cli("run", recipe, *sets, "--runs-dir", runs, "-q"))
    assert check == line
    for part in expected:
        assert part in line, line
    assert not runs.exists(), list(runs.rglob("*"))
    return line


CIFAR = TINY.replace('[data]\nname = "shapes"\ntrain_size = 1024\ntest_size = 64', '[data]\nname = "cifar10"')


def test_cifar_root_missing_is_refused_before_any_directory(run_cli, tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, CIFAR)
    missing = tmp_path / "no" / "such" / "root"
    refused_before_anything(
        run_cli,
        tmp_path,
        recipe,
        f"data.root={missing}",
        "data.download=false",
        expected=("cifar10: no usable data in", str(missing)),
    )
    # with download = true and no network (a proxy that refuses), the attempt leaves nothing behind either
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    refused_before_anything(run_cli, tmp_path, recipe, f"data.root={missing}", expected=("download failed",))
    assert not (tmp_path / "no").exists()


def test_cifar_root_that_is_a_file_is_refused_before_any_directory(run_cli, tmp_path):
    recipe = write_recipe(tmp_path, CIFAR)
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    refused_before_anything(
        run_cli, tmp_path, recipe, f"data.root={root}", expected=(f"[data] root {root} is a file, not a folder",)
    )
    assert root.read_text() == "not a folder"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sample.prompts=[]", "[sample] key 'prompts': no prompts"),
        ('sample.prompts=["a red circle", "  "]', "[sample] key 'prompts': prompt 2 is empty"),
    ],
)
def test_sample_prompts_are_checked_before_any_directory(run_cli, tmp_path, tiny_recipe, override, expected):
    refused_before_anything(run_cli, tmp_path, tiny_recipe, override, expected=(expected,))


def test_prompts_file_that_is_not_text_is_refused_before_any_directory(run_cli, tmp_path, tiny_recipe):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\xff\xfe\x00binary")
    refused_before_anything(
        run_cli,
        tmp_path,
        tiny_recipe,
        "sample.prompts=[]",
        f"sample.prompts_file={prompts}",
        expected=("[sample] key 'prompts_file': cannot be read (not UTF-8 text)",),
    )


# ------------------------------------------------------------------------------------------ 6. smaller things
@pytest.mark.parametrize(
    "args",
    [
        ("sample",),
        ("sample", "runs/x"),
        ("eval", "runs/x", "-n", "0"),
        ("run", "--stop-at", "0"),
        ("sample", "runs/x", "a red circle", "-n", "abc"),
        ("--no-such-option",),
        ("no-such-command",),
        ("plugins", "shw"),
        ("recipe", "check"),
        ("compare",),
        ("bench", "grid.toml", "--bogus"),
    ],
)
def test_usage_mistakes_are_one_line_with_a_help_hint(run_cli, args):
    line = one_line_error(*run_cli(*args))
    assert re.search(r"see `(\S*dalle-kit|\S+ -m dalle_kit)( [a-z-]+)* --help`$", line), line
    hint = line.rsplit("see `", 1)[1].rstrip("`").split()  # it works as printed: the help of that command
    done = subprocess.run(hint, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("Usage: dalle-kit"), (hint, done.stderr)


def test_eval_with_an_unknown_metric_leaves_the_lock_alone(copy, run_cli):
    lock = copy / ".lock"
    lock.unlink(missing_ok=True)
    line = one_line_error(*run_cli("eval", copy, "-m", "fdi"))
    assert "fdi" in line and "did you mean 'fid'" in line and not lock.exists()


def test_lock_refusal_names_a_holder_that_has_not_written_its_pid(copy, run_cli):
    import fcntl

    fd = os.open(copy / ".lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, the file still empty
        line = one_line_error(*run_cli("run", "--resume", copy, "-q"))
        assert f"pid {os.getpid()} holds" in line and "pid ?" not in line, line
    finally:
        os.close(fd)


def test_divergence_advice_is_a_new_run_not_a_resume(copy, run_cli):
    recipe = copy / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("lr = 0.0002", "lr = 1000000.0"))
    line = one_line_error(*run_cli("run", "--resume", copy, "-q"))
    advice = f"in a new run, e.g. .venv/bin/dalle-kit run {recipe} --set train.lr=500000 --set init_from={copy}"
    assert line.endswith(advice), line
    assert "--resume" not in line.split("; ", 1)[1], line
