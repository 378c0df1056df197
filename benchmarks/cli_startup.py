"""How long the CLI takes to answer `--help`, against what it used to import for it (torch, through the parts).

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5]

Interleaved in one run, each a fresh interpreter: `dalle-kit --help` (torch not imported since the lazy
public API) and `python -c "import dalle_kit.parts"` plus the same help (what `--help` cost before: the
package's __init__ imported torch). Prints the median wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

NOW = [sys.executable, "-c", "from dalle_kit.cli import main; main(['--help'])"]
BEFORE = [sys.executable, "-c", "import dalle_kit.parts; from dalle_kit.cli import main; main(['--help'])"]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    now, before = [], []
    for _ in range(args.repeat):
        now.append(timed(NOW))
        before.append(timed(BEFORE))
    a, b = statistics.median(now), statistics.median(before)
    print(f"dalle-kit --help, median of {args.repeat}: now {a:.3f} s, with torch imported as before {b:.3f} s, "
          f"ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
