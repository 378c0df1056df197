"""A full evaluation at Lucic et al.'s size, end to end: this checkout against an earlier commit, in one run.

    .venv/bin/python benchmarks/eval_throughput.py [--before REV] [-n 10000] [--steps 200 | --run DIR]
                                                   [--precision bf16-mixed]

Trains a short `fashion` run (recipes/fashion.toml, `--steps` steps; the images' quality does not change
the cost), or takes the fashion run in `--run DIR` (so that several calls score the same weights), makes sure
the reference features of the first n Fashion-MNIST test images are in the cache (fp32, the same entry for both
code versions), then evaluates the run's weights with `fid`, `kid`, `prc`
and `intra-fid` on n generated images, twice, each in a fresh interpreter with nothing else running:
with the code of REV ("before", a `git worktree` of it put first on the path) and with this checkout
("after", its metrics set to `--precision`: "fp32", the default, or "bf16-mixed"). Each prints its phases: generating the n images, then each metric in order (the first one
includes the Inception pass over the generated images, which the others share). Prints both, the ratio of
the totals, and every value side by side with |difference|.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["fid", "kid", "prc", "intra-fid"]

#: Run in each interpreter: argv = run_dir, n. Prints one JSON line.
EVALUATE = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t_start = time.perf_counter()
from dalle_kit.evaluation import Evaluation, build_metrics
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
import dalle_kit_plugins
registry = get_registry()
run = Run.open(sys.argv[1], registry, quiet=True)
n = int(sys.argv[2])
names = json.loads(sys.argv[3])
settings = dict(run.recipe.metric_settings)
if len(sys.argv) > 4:  # this checkout: the precision of the generated images' pass
    import attrs
    settings = {n: attrs.evolve(settings.get(n) or registry.get("metric", n).cls.Config(), precision=sys.argv[4]) for n in names}
built = build_metrics(names, registry, settings=settings)
t0 = time.perf_counter()
evaluation = Evaluation.from_run(run, num_samples=n, seed=0, metric_names=list(built))
for metric in built.values():
    metric.check(evaluation)
phases = {"setup": t0 - t_start}
t = time.perf_counter(); evaluation.generated; phases["generation"] = time.perf_counter() - t
values, labels = {}, {}
for name, metric in built.items():
    t = time.perf_counter()
    result = metric.compute(evaluation)
    phases[name] = time.perf_counter() - t
    values.update({f"{name}.{k}": v for k, v in result.values.items()})
    labels[name] = result.protocol.extractor
phases["total"] = time.perf_counter() - t0
print(json.dumps({"phases": phases, "values": values, "labels": labels, "code": dalle_kit_plugins.__path__[0]}))
"""


#: Run once before the timed interpreters: argv = run_dir, n. Puts the reference features of the first n images of the
#: reference split (what an evaluation of n images compares against) into the cache, so neither side pays for them.
WARM_REFERENCE = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
from dalle_kit.evaluation import Evaluation, build_metrics
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins.fidelity import generated_extractor, reference_features
registry = get_registry()
run = Run.open(sys.argv[1], registry, quiet=True)
fid = build_metrics(["fid"], registry, settings=dict(run.recipe.metric_settings))["fid"]
evaluation = Evaluation.from_run(run, num_samples=int(sys.argv[2]), seed=0, metric_names=["fid"])
extractor = generated_extractor(fid.config, evaluation.device)
features = reference_features(evaluation, extractor, fid.config.batch_size)
print(json.dumps({"n_reference": len(features), "labels": {"fid": extractor.label}}))
"""


def interpreter(path_first: Path | None, *args: str, script: str = EVALUATE) -> dict:
    env = dict(os.environ)
    if path_first is not None:
        env["PYTHONPATH"] = str(path_first)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"evaluation failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def old_tree(rev: str, work: Path) -> Path:
    """A worktree of REV, and a folder that puts its dalle_kit and dalle_kit_plugins (plugins/) first on the path."""
    tree = work / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    path = work / "path"
    path.mkdir()
    (path / "dalle_kit").symlink_to(tree / "dalle_kit")
    (path / "dalle_kit_plugins").symlink_to(tree / "plugins")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="aa431d9", help="the commit whose evaluation path is 'before'")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--run", type=Path, metavar="DIR", help="score this fashion run's weights instead of training one")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16-mixed"], help="of 'after'")
    args = parser.parse_args()
    import torch

    from dalle_kit import api
    from dalle_kit_plugins.bf16 import has_bf16

    work = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    t = time.perf_counter()
    if args.run:
        from dalle_kit.errors import UserError
        from dalle_kit.registry import get_registry
        from dalle_kit.run import Run

        try:
            run = Run.open(args.run, get_registry(), quiet=True)
        except UserError as e:
            parser.error(f"--run: {e}")
        checkpoint = run.last_good_checkpoint()
        if checkpoint is None:
            parser.error(f"--run {args.run}: no checkpoint to score; name a run that has trained")
        print(f"scoring {run.dir} ({run.recipe.name}, step {checkpoint[0]})", flush=True)
    else:
        run = api.train("fashion", [f"train.steps={args.steps}", "eval.metrics=[]"], runs_dir=work / "runs", quiet=True)
        print(f"trained {run.dir.name} for {args.steps} steps in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    warm = interpreter(None, str(run.dir), str(args.n), script=WARM_REFERENCE)  # fills the cache if it is empty
    print(f"reference features of {warm['n_reference']} images ready ({time.perf_counter() - t:.0f} s: "
          f"{warm['labels']['fid']})", flush=True)

    before_path = old_tree(args.before, work)
    try:
        results = {}
        for label, path in (("before", before_path), ("after", None)):
            extra = [args.precision] if path is None else []
            results[label] = interpreter(path, str(run.dir), str(args.n), json.dumps(METRICS), *extra)
            print(f"{label}: {results[label]['phases']['total']:.1f} s ({results[label]['code']})", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "tree")], check=False)

    print(f"\nfull evaluation, {args.n} generated images vs the first {warm['n_reference']} Fashion-MNIST test images "
          f"(reference features cached), metrics {', '.join(METRICS)}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"native bf16: {has_bf16(torch.device('cpu'))}, torch {torch.__version__}")
    print(f"before = {args.before}: {results['before']['labels']['fid']}")
    print(f"after  = this checkout, precision {args.precision}: {results['after']['labels']['fid']}")
    print(f"{'phase':12s} {'before s':>9s} {'after s':>9s} {'ratio':>6s}")
    for phase in results["before"]["phases"]:
        b, a = results["before"]["phases"][phase], results["after"]["phases"][phase]
        print(f"{phase:12s} {b:9.1f} {a:9.1f} {b / a if a else float('nan'):6.2f}")
    print(f"\n{'value':28s} {'before':>12s} {'after':>12s} {'|diff|':>10s} {'rel.':>8s}")
    for key, b in results["before"]["values"].items():
        a = results["after"]["values"][key]
        rel = abs(a - b) / abs(b) if b else float("nan")
        print(f"{key:28s} {b:12.6g} {a:12.6g} {abs(a - b):10.3g} {100 * rel:7.3f}%")


if __name__ == "__main__":
    main()
