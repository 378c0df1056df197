"""Render dalle-kit's HTML pages (a run's report.html, compare.html) in a real browser: headless Chromium (a test
helper, also run by hand to check a page or make a screenshot for the docs).

    python tests/render_pages.py runs/shapes-.../report.html --screenshot docs/report.png
    python tests/render_pages.py compare/compare.html --width 1400 --height 2200

Prints how many of the page's images the browser decoded (the page writes ``data-images-loaded="n/total"`` on its
<body> when it has loaded; read back with ``--dump-dom``) and exits 1 when one did not. ``--screenshot`` also
saves a PNG of the first ``--height`` pixels. Chromium: ``apt-get install -y chromium`` (Debian) or set CHROMIUM.
Importable: `find_chromium`, `images_loaded`, `screenshot`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_LOADED = re.compile(r'data-images-loaded="(\d+)/(\d+)"')


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of `NAMES` on PATH; None when there is none."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def _chromium(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="render-pages-") as profile:  # no state shared with a user's browser
        command = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def images_loaded(page: str | Path, *, binary: str | None = None, timeout: float = 120) -> tuple[int, int]:
    """(images decoded, images) of `page` once the browser has loaded it, from the DOM Chromium dumps."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary found (apt-get install -y chromium, or set CHROMIUM)")
    done = _chromium(binary, ["--dump-dom", Path(page).resolve().as_uri()], timeout)
    match = _LOADED.search(done.stdout)
    if match is None:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{page}: the page did not report its images (exit {done.returncode}: {tail[0]})")
    return int(match.group(1)), int(match.group(2))


def screenshot(
    page: str | Path,
    out: str | Path,
    *,
    width: int = 1280,
    height: int = 1800,
    binary: str | None = None,
    timeout: float = 120,
) -> Path:
    """A PNG of the top `width` x `height` pixels of `page` as Chromium draws it."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary found (apt-get install -y chromium, or set CHROMIUM)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _chromium(
        binary, [f"--screenshot={out}", f"--window-size={width},{height}", Path(page).resolve().as_uri()], timeout
    )
    if not out.is_file():
        raise RuntimeError(
            f"{page}: chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-300:]}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path, help="HTML files")
    parser.add_argument("--screenshot", type=Path, help="PNG to write (one page only)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800)
    args = parser.parse_args(argv)
    if args.screenshot and len(args.pages) != 1:
        parser.error("--screenshot takes one page")
    if find_chromium() is None:
        print(
            "no chromium binary found: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)", file=sys.stderr
        )
        return 2
    status = 0
    for page in args.pages:
        loaded, total = images_loaded(page)
        print(f"{page}: {loaded}/{total} images loaded")
        status |= loaded != total
        if args.screenshot:
            print(f"wrote {screenshot(page, args.screenshot, width=args.width, height=args.height)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
