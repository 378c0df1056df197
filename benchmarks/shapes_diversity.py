"""Diversity within a prompt, before/after: score shapes runs with FID, precision/recall, intra-FID and text-alignment.

    .venv/bin/dalle-kit run shapes --runs-dir runs/before --set train.mode_seeking=0
    .venv/bin/dalle-kit run shapes --runs-dir runs/after
    .venv/bin/python benchmarks/shapes_diversity.py runs/before/shapes-* runs/after/shapes-* [-n 2000] [--calibrate]
    .venv/bin/python benchmarks/diversity.py runs/before/shapes-* runs/after/shapes-*

Every run is scored with one protocol: n generated images for prompts drawn (seeded) from the shapes
test captions against the first n test images; intra-FID over shape x colour classes (every shapes
caption states both), from the same Inception features as FID and precision/recall. Each score is
printed with its protocol, logged to the run's metrics.jsonl and the whole lot is written as JSON
to benchmarks/results/shapes-diversity.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dalle_kit.evaluation import Evaluation, build_metrics, compute_metrics, format_result
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins.fidelity import PRC_NEIGHBORHOOD, IntraFIDConfig

METRICS = ["fid", "prc", "intra-fid", "text-alignment"]
RESULTS = Path(__file__).parent / "results"


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(x.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.double))
    return {"p10": round(float(q[0]), 3), "median": round(float(q[1]), 3), "p90": round(float(q[2]), 3)}


def feature_distances(evaluation) -> dict:
    """Why precision/recall read what they read: in the shared Inception features, each reference image's
    k-NN radius (its ball; k = 3 as in prc) and each generated image's distance to its nearest reference image.
    A generated image counts for precision only when that distance is inside some reference ball."""
    gen = next(v for k, v in evaluation.shared.items() if isinstance(k, tuple) and k[0] == "inception-features")
    ref = next(v for k, v in evaluation.shared.items() if isinstance(k, tuple) and k[0] == "inception-reference-features")
    gen, ref = gen.double(), ref.double()
    radius = torch.cdist(ref, ref).kthvalue(PRC_NEIGHBORHOOD + 1, dim=1).values
    to_ref = torch.cdist(gen, ref)
    return {"reference_ball_radius": _quantiles(radius), "generated_to_nearest_reference": _quantiles(to_ref.min(1).values),
            "generated_feature_norm": _quantiles(gen.norm(dim=1)), "reference_feature_norm": _quantiles(ref.norm(dim=1))}


def real_calibration(registry, run_dir: str, n: int, seed: int) -> dict:
    """What a perfect generator would score: the first n *train* images (with their own captions) put in the
    place of the generated ones, against the same n test images, through the same metrics."""
    run = Run.open(run_dir, registry, quiet=True)
    data = run.build_dataset()
    train = data.load("train")
    images = train.images[:n]
    captions = list(train.captions[:n])
    settings = {"intra-fid": IntraFIDConfig(attributes=["shape", "colour"])}
    metrics = build_metrics(METRICS[:3], registry, settings=settings)
    evaluation = Evaluation(data, num_samples=n, seed=seed, metric_names=METRICS[:3], generated=images, prompts=captions)
    results = compute_metrics(evaluation, metrics)
    rows = {name: result.row(name) for name, result in results.items()}
    rows["distances"] = feature_distances(evaluation)
    for name, result in results.items():
        print(f"real train images: {format_result(name, result)}", flush=True)
    print(f"real train images: distances {rows['distances']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("-n", "--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "shapes-diversity.json"))
    parser.add_argument("--calibrate", action="store_true",
                        help="also score n real train images in place of generated ones (what a perfect generator gets)")
    args = parser.parse_args()
    registry = get_registry()
    settings = {"intra-fid": IntraFIDConfig(attributes=["shape", "colour"])}
    table = {}
    for run_dir in args.runs:
        run = Run.open(run_dir, registry, quiet=True)
        metrics = build_metrics(METRICS, registry, settings=settings)
        evaluation = Evaluation.from_run(run, num_samples=args.num_samples, seed=args.seed, metric_names=METRICS)
        results = compute_metrics(evaluation, metrics)
        step = int(run.load_checkpoint(prefixes=())["step"])
        rows = {}
        for name, result in results.items():
            run.log(step, kind="eval", **result.row(name))
            rows[name] = result.row(name)
            print(f"{run_dir}: {format_result(name, result)}", flush=True)
        rows["distances"] = feature_distances(evaluation)
        print(f"{run_dir}: distances {rows['distances']}", flush=True)
        train = [r for r in run.read_metrics() if r["kind"] == "train"]
        table[run_dir] = {"step": step, "train_time_s": train[-1]["time"] if train else None,
                          "train_config": str(run.recipe.train), "metrics": rows}
    if args.calibrate:
        table["real train images"] = {"metrics": real_calibration(registry, args.runs[0], args.num_samples, args.seed)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
