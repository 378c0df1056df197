"""How long the CLI takes to answer, against what the same answer cost when it imported torch and every plugin.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5]

Interleaved in one run, each a fresh interpreter, median of `--repeat`:
- `dalle-kit --help` now (torch not imported since the lazy public API) and with `import dalle_kit.parts`
  first (what `--help` cost before: the package's __init__ imported torch);
- `dalle-kit plugins list` answered from the registry index (`dalle_kit/registry_index.py`, a warm cache)
  and with an empty cache folder each time (a full discovery: every plugin and torch imported; what every
  `plugins list` cost before the index).
Prints the median wall time of each and their ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CLI = "from dalle_kit.cli import main; import sys; sys.exit(main({args!r}))"
CASES = {
    "--help": [sys.executable, "-c", CLI.format(args=["--help"])],
    "--help, torch imported (before)": [sys.executable, "-c", "import dalle_kit.parts; " + CLI.format(args=["--help"])],
    "plugins list, index": [sys.executable, "-c", CLI.format(args=["plugins", "list"])],
    "plugins list, full discovery (before)": [sys.executable, "-c", CLI.format(args=["plugins", "list"])],
}


def timed(cmd: list[str], cache: str) -> float:
    env = dict(os.environ, DALLE_KIT_CACHE=cache)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warm = tempfile.mkdtemp(prefix="cli-startup-")
    timed(CASES["plugins list, index"], warm)  # builds the index
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name, cmd in CASES.items():
            cache = tempfile.mkdtemp(prefix="cli-startup-cold-") if "discovery" in name else warm
            times[name].append(timed(cmd, cache))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"CLI wall time, fresh interpreter each, median of {args.repeat} interleaved ({os.cpu_count()} CPUs, {sys.version.split()[0]}):")
    for name, value in med.items():
        print(f"  {name:40s} {value:6.3f} s")
    print(f"--help: {med['--help, torch imported (before)'] / med['--help']:.1f}x faster; plugins list: "
          f"{med['plugins list, full discovery (before)'] / med['plugins list, index']:.1f}x faster")


if __name__ == "__main__":
    main()
