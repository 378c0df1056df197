"""Diversity within a prompt, before/after: score shapes runs with FID, precision/recall, intra-FID and text-alignment.

    .venv/bin/dalle-kit run shapes --runs-dir runs/before --set train.mode_seeking=0
    .venv/bin/dalle-kit run shapes --runs-dir runs/after
    .venv/bin/python benchmarks/shapes_diversity.py runs/before/shapes-* runs/after/shapes-* [-n 2000]
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

from dalle_kit.evaluation import Evaluation, build_metrics, compute_metrics, format_result
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins.fidelity import IntraFIDConfig

METRICS = ["fid", "prc", "intra-fid", "text-alignment"]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("-n", "--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "shapes-diversity.json"))
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
        train = [r for r in run.read_metrics() if r["kind"] == "train"]
        table[run_dir] = {"step": step, "train_time_s": train[-1]["time"] if train else None,
                          "train_config": str(run.recipe.train), "metrics": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
