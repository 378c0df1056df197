"""Training in several processes: real torchrun jobs of 2 CPU processes (gloo) through DistributedDataParallel."""

import json
import os
import subprocess
import sys
from pathlib import Path


from conftest import SHAPES_16, TINY, write_recipe
from dalle_kit.checkpoint import list_checkpoints

HERE = Path(__file__).parent

VAE = (
    """\
name = "vae2"
pipeline = "vae"
seed = 0

"""
    + SHAPES_16
    + """
[generator]
name = "vae-decoder"
latent_dim = 8
width = 8

[train]
steps = 40
batch_size = 16
lr = 2e-3
betas = [0.9, 0.999]
encoder_width = 8
log_every = 5
checkpoint_every = 20

[sample]
prompts = ["a red circle", "a blue square"]
every = 20
per_prompt = 2
"""
)


def torchrun(out: Path, *args: str, nproc: int = 2, site: Path | None = None) -> subprocess.CompletedProcess:
    """`dalle-kit ARGS` in `nproc` processes under torchrun, each rank recording the weight digests it compared."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if site is not None:  # test plugins installed there
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(HERE / "ddp_digests.py"),
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=out,
    )


def rows(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_two_processes_train_one_model_rank0_writes_and_one_process_resumes(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, VAE)
    done = torchrun(tmp_path / "job", "run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    # Both ranks compared the same weights at each checkpoint (steps 20 and 40), and agreed.
    ranks = [json.loads((tmp_path / "job" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["digests"]) == 2 and ranks[0]["digests"] == ranks[1]["digests"]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # Rank 0 alone wrote: one run directory, one event file, each logged step once, one line on stdout.
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert done.stdout.count("run directory:") == 1
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    train = rows(run_dir, "train")
    assert [r["step"] for r in train] == list(range(5, 41, 5))
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [20, 40]
    assert (run_dir / "samples" / "step-00000040.png").is_file()
    assert not (run_dir / ".lock").exists()  # rank 0 held it while training and removed it at the end
    (setup,) = rows(run_dir, "distributed")
    assert (
        setup["processes"] == 2
        and setup["backend"] == "gloo"
        and setup["global_batch"] == 2 * setup["batch_per_process"]
    )
    # The loss (averaged over the ranks) falls.
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]
    # The checkpoint written by 2 processes goes on in 1.
    code, _, err = run_cli("run", "--resume", str(run_dir), "--set", "train.steps=50", "-q")
    assert code == 0, err
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")][-1] == 50
    assert [r["step"] for r in rows(run_dir, "train")][-2:] == [45, 50]


def test_gan_options_that_call_networks_several_times_keep_the_ranks_identical(tmp_path):
    # Gradient penalty (double backward through D), two critic steps, matching-aware negatives and mode seeking
    # (a second G forward): each calls a network more than once per step.
    recipe = write_recipe(
        tmp_path,
        TINY.replace('name = "hinge"', 'name = "wgan-gp"')
        .replace("steps = 30", "steps = 20\nn_critic = 2\nmatching_aware = true\nmode_seeking = 0.1")
        .replace("every = 15", "every = 0"),
    )
    done = torchrun(tmp_path / "job", "run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "job" / f"rank{r}.json").read_text())["digests"] for r in (0, 1)]
    assert len(ranks[0]) == 2 and ranks[0] == ranks[1]


def test_a_pipeline_that_does_not_share_gradients_is_stopped(tmp_path, plugin_site):
    # The third-party `paint` pipeline calls its network directly, not through run.parts.parallel: its ranks drift apart
    # and the trainer says so at the first checkpoint instead of saving one rank's weights as the run's.
    from test_trainer import PAINT

    recipe = write_recipe(tmp_path, PAINT)
    done = torchrun(tmp_path / "job", "run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q", site=plugin_site)
    assert done.returncode != 0
    assert "the weights of rank(s) [1] differ from rank 0's; pipeline 'paint'" in done.stderr
    assert done.stderr.count("dalle-kit: error:") == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not list((run_dir / "checkpoints").glob("*.safetensors"))


def test_launcher_refuses_a_bad_recipe_in_one_line_before_starting_processes(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, TINY.replace("steps = 30", "steps = -1"))
    code, _, err = run_cli("run", str(recipe), "--nproc", "2", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and err.count("\n") == 1 and "steps" in err
    assert not (tmp_path / "runs").exists()
    code, _, err = run_cli(
        "run",
        str(write_recipe(tmp_path, TINY.replace("steps = 30", "steps = 30\nsync_batchnorm = true"), "sbn.toml")),
        "--nproc",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert code == 2 and "sync_batchnorm" in err and "CUDA" in err


def test_launcher_passes_sigterm_on_once_and_rank0_checkpoints(tmp_path):
    import signal
    import time

    recipe = write_recipe(
        tmp_path,
        TINY.replace("steps = 30", "steps = 100000\ncheckpoint_every = 100000")
        .replace("checkpoint_every = 10\n", "")
        .replace("every = 15", "every = 0"),
    )
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dalle_kit", "run", str(recipe), "--nproc", "2", "--runs-dir", str(runs), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until both ranks train (rank 0 has logged a step)
        logs = list(runs.glob("*/metrics.jsonl"))
        if logs and len(rows(logs[0].parent, "train")) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    (run_dir,) = runs.iterdir()
    ((step, _),) = list_checkpoints(run_dir / "checkpoints")
    assert f"stopped at step {step}" in out and out.count("stopped at step") == 1


def test_vq_dvae_codebook_maintenance_keeps_the_ranks_identical(tmp_path):
    # vq-dvae re-seeds dead codebook entries from each rank's own batch (outside the gradient step); the dvae pipeline
    # gives every rank rank 0's codec after it, so the ranks' weights agree at both checkpoints.
    overrides = [
        "data.train_size=256",
        "data.test_size=32",
        "codec.width=16",
        "codec.res_blocks=1",
        "codec.codebook_size=64",
        "train.batch_size=8",
        "train.steps=12",
        "train.log_every=4",
        "train.checkpoint_every=6",
        "train.eval_images=16",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    done = torchrun(tmp_path / "job", "run", "shapes-dvae", *sets, "--runs-dir", str(tmp_path / "runs"), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "job" / f"rank{r}.json").read_text())["digests"] for r in (0, 1)]
    assert len(ranks[0]) == 2 and ranks[0] == ranks[1]
