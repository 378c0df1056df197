"""The font of a sample grid's prompt labels: one that has a glyph for every character of the prompts.

Pillow's default font draws ASCII only, so "un carré" or "红色的圆" came out as boxes. The labels are drawn with
DejaVu Sans (matplotlib ships it: Latin, Greek, Cyrillic and more); prompts it cannot draw take the first of the
system's fonts (matplotlib's font search) that can. When none can, the missing characters are named in one warning,
with the package that draws them where that is a Debian one.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from .. import hints

#: The scripts Noto CJK covers: CJK ideographs, kana, Hangul, CJK symbols and full-width forms.
_CJK = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]"
)
_warned: set[frozenset[str]] = set()


@functools.lru_cache(maxsize=None)
def _coverage(path: str) -> frozenset[int]:
    """The code points the font file at `path` has glyphs for (the first font of a collection); empty when unreadable."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset((font.getBestCmap() or {}).keys())
    except Exception:  # a damaged or unsupported font file is simply not a candidate
        return frozenset()


_STYLED = re.compile(r"bold|black|heavy|italic|oblique|light|thin|medium|semi|demi|extra|ultra", re.I)


@functools.lru_cache(maxsize=1)
def _system_fonts() -> tuple[str, ...]:
    """The system's font files, upright regular weights first."""
    from matplotlib import font_manager

    files = [p for p in font_manager.findSystemFonts() if Path(p).suffix.lower() in (".ttf", ".otf", ".ttc")]
    return tuple(sorted(files, key=lambda p: (bool(_STYLED.search(Path(p).name)), p)))


def _dejavu() -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def font_file(texts: Iterable[str]) -> str:
    """The font file the labels `texts` are drawn with: DejaVu Sans when it has every character, else the first
    system font that has, else DejaVu Sans (with one warning per set of missing characters)."""
    wanted = {ord(c) for text in texts for c in text if not c.isspace()}
    first = _dejavu()
    if wanted <= _coverage(first):
        return first
    for path in _system_fonts():
        if wanted <= _coverage(path):
            return path
    missing = frozenset(chr(c) for c in wanted - _coverage(first))
    if missing not in _warned:
        _warned.add(missing)
        shown = ", ".join(repr(c) for c in sorted(missing)[:8]) + (", ..." if len(missing) > 8 else "")
        fix = (
            f"install a font that has them: {hints.apt_install('fonts-noto-cjk')}"
            if all(_CJK.match(c) for c in missing)
            else "install a font that has them"
        )
        warnings.warn(f"grid labels: no font here draws all of {shown} (they show as boxes); {fix}", stacklevel=3)
    return first


def label_font(texts: Iterable[str], size: int = 11):
    """A Pillow font for the labels `texts` (see `font_file`)."""
    from PIL import ImageFont

    return ImageFont.truetype(font_file(list(texts)), size)
