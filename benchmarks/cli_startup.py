"""How long the CLI takes to answer, against what the same answer costs when torch and every plugin are imported.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5] [--smoke] [--record]

Interleaved in one run, each a fresh interpreter, median of `--repeat`:
- `dalle-kit --help` as shipped (it imports neither torch nor a plugin) and with `import torch` first (what
  `--help` costs when the package imports torch);
- `dalle-kit plugins list` answered from the registry index (`dalle_kit/tools/registry_index.py`, a warm cache)
  and with an empty cache folder each time (a full discovery: every plugin and torch imported).
Prints the median wall time of each and the ratio of each pair.

Results: benchmarks/results/cli-startup.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import CHILD, Table, add_arguments, emit

CLI = "from dalle_kit.cli import main; import sys; sys.exit(main({args!r}))"
#: (command, its answer as shipped, the same answer with everything imported)
PAIRS = {
    "--help": (
        [sys.executable, "-c", CLI.format(args=["--help"])],
        [sys.executable, "-c", "import torch; " + CLI.format(args=["--help"])],
    ),
    "plugins list": (
        [sys.executable, "-c", CLI.format(args=["plugins", "list"])],
        [sys.executable, "-c", CLI.format(args=["plugins", "list"])],
    ),
}
FULL = {"--help": "torch imported first", "plugins list": "full discovery (empty cache)"}


def timed(cmd: list[str], cache: str) -> float:
    env = dict(os.environ, DALLE_KIT_CACHE=cache)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, **CHILD)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as work:
        warm = os.path.join(work, "warm")
        timed(PAIRS["plugins list"][0], warm)  # builds the index
        times: dict[tuple[str, int], list[float]] = {(name, i): [] for name in PAIRS for i in (0, 1)}
        for r in range(args.repeat):
            for name, commands in PAIRS.items():
                for i, cmd in enumerate(commands):
                    cold = name == "plugins list" and i == 1
                    times[(name, i)].append(timed(cmd, os.path.join(work, f"cold-{r}") if cold else warm))
    med = {key: statistics.median(t) for key, t in times.items()}
    table = Table(
        "Wall time of a CLI command",
        ["python", "repeats", "command", "as shipped (s)", "everything imported (s)", "which", "ratio"],
    )
    for name in PAIRS:
        table.add(
            sys.version.split()[0],
            args.repeat,
            name,
            f"{med[(name, 0)]:.3f}",
            f"{med[(name, 1)]:.3f}",
            FULL[name],
            f"{med[(name, 1)] / med[(name, 0)]:.1f}x",
        )
    emit(
        "cli-startup",
        f"fresh interpreter each, median of {args.repeat} interleaved",
        [table],
        record=args.record,
        smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
