"""Drawing from a trained run, a tool above the core: `sample` (the `dalle-kit sample` command) draws images for
prompts from a run's latest weights into one grid PNG, a row per prompt; `save_grid` writes such a grid (the
``sample-grids`` training plugin's sheets too)."""

from __future__ import annotations

import difflib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import hints, progress
from ..errors import UserError
from ..files import atomic_write_bytes, check_target
from ..schema import MAX_SEED

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..registry import Registry
    from ..run import Run

#: The most images one `sample` call draws (prompts x -n): a grid beyond it is unreadable and may exhaust memory.
MAX_SAMPLE_IMAGES = 1024
SAMPLE_PROMPT = '"a red circle"'


def sample(
    run_dir: str | Path,
    prompts: Sequence[str],
    n: int = 8,
    out: str | Path | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    settings: Sequence[str] = (),
) -> Path:
    """Draw `n` images per prompt from the run's latest weights into one grid PNG. `settings` (``train.KEY=VALUE``)
    change how the pipeline draws (a diffusion run's ``train.sample_steps``, ``train.guidance_scale``), validated
    like a recipe's ``--set``; the run's files are not changed."""
    import torch

    from ..registry import get_registry
    from ..run import Run
    from ..trainer import sampler

    check_sample_request(prompts, n, hints.dalle_kit(f"sample {hints.quote(str(run_dir))} {SAMPLE_PROMPT}"))
    check_setting_keys(settings, "sample")
    if out is not None and Path(out).is_dir() and not Path(out).is_symlink():
        raise UserError(f"-o {out}: is a directory; name a PNG file, e.g. -o {Path(out) / 'sample.png'}")
    if out is not None:
        grid_format(out)
        check_target(out)  # a link, a FIFO or a device there, a file in the way: refused before any drawing
    registry = registry or get_registry()
    run = Run.open(run_dir, registry, quiet=True)
    if not Path(run_dir).exists():
        click.echo(f"{run_dir}: its newest run, {run.dir}", err=True)
    warn_unknown_words(run, prompts)
    out = Path(out) if out else run.dir / "sample.png"
    check_target(out)
    draw = sampler(run, run.recipe.pipeline.info.cls(train_with(run, settings)))
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        images = draw([p for p in prompts for _ in range(n)], generator)
    return save_grid(images, list(prompts), out, title=f"{run.recipe.name} ({run.dir})")


def check_setting_keys(settings: Sequence[str], command: str) -> None:
    """Refuse, in one line, a ``--set`` of `command` that is not a ``train.KEY=VALUE`` (the parts must stay as they
    were trained; only how the pipeline draws may change)."""
    for setting in settings:
        if not setting.partition("=")[0].strip().startswith("train."):
            raise UserError(
                f"--set {setting}: {command} changes only the pipeline's [train] settings (train.KEY=VALUE, e.g. "
                "train.guidance_scale=1.0); the parts must stay as they were trained"
            )


def train_with(run: Run, settings: Sequence[str]):
    """The run's ``[train]`` config with `settings` (``train.KEY=VALUE``) applied and validated like a recipe's
    ``--set``: an unknown key or a bad value is one `UserError`/`RecipeError` line. The run's files are not
    changed."""
    import attrs

    from ..recipe import RECIPE_FILE, load_recipe

    check_setting_keys(settings, "this command")
    if not settings:
        return run.recipe.train
    known = attrs.fields_dict(type(run.recipe.train))
    pipeline = run.recipe.pipeline.info.name
    for setting in settings:
        key = setting.partition("=")[0].strip().removeprefix("train.")
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            raise UserError(
                f"--set {setting}: unknown key '{key}' in pipeline '{pipeline}''s [train]"
                + (f" (did you mean '{near[0]}'?)" if near else "")
                + f"; see {hints.dalle_kit('plugins show ' + pipeline)}"
            )
    return load_recipe(run.dir / RECIPE_FILE, run.registry, list(settings), check_name=False).train


def warn_unknown_words(run: Run, prompts: Sequence[str]) -> None:
    """One warning line naming the prompt words that the run's text encoder never saw, when it learned a vocabulary
    from the training captions (saved in the checkpoint as ``extra.text_encoder.vocab``)."""
    spec = run.recipe.parts.get("text_encoder")
    if spec is None:
        return
    state = run.checkpoints.load(prefixes=("extra",))
    saved = ((state or {}).get("extra") or {}).get("text_encoder")
    unknown = spec.info.cls.unknown_words(saved, prompts)
    if unknown:
        words = ", ".join(repr(w) for w in unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        warnings.warn(
            f"{words}: not in the vocabulary the text encoder learned from {run.dir}'s training captions; "
            "it reads them as unknown, so they do not steer the images",
            stacklevel=2,
        )


def check_sample_request(prompts: Sequence[str], n: int, example: str) -> None:
    """A one-line `UserError` unless there are prompts, none empty, and `n` per prompt stays within `MAX_SAMPLE_IMAGES`;
    `example` is the command, as given with a prompt, that the refusal shows."""
    if not prompts:
        raise UserError(f"give at least one prompt, for example: {example}")
    for i, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise UserError(f"prompt {i} is empty; give some text, for example: {example}")
    if n < 1:
        raise UserError(f"-n {n}: need at least one image per prompt")
    if n * len(prompts) > MAX_SAMPLE_IMAGES:
        raise UserError(
            f"-n {n} x {len(prompts)} prompts = {n * len(prompts)} images: at most {MAX_SAMPLE_IMAGES} per call; "
            f"lower -n to {max(1, MAX_SAMPLE_IMAGES // len(prompts))} or split the prompts"
        )


def save_grid(
    images: torch.Tensor, prompts: Sequence[str], path: str | Path, *, title: str = "", cell: int = 64, wrap: int = 16
) -> Path:
    """Save images [len(prompts) * per_prompt, C, H, W] in [-1, 1] as rows labelled with their prompt; a prompt
    with more than `wrap` images takes several lines of `wrap` (64 draws of one prompt make a square, not a strip)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..parts import to_uint8_images
    from .fonts import label_font

    per_prompt = len(images) // max(len(prompts), 1)
    columns = max(1, min(per_prompt, wrap))
    lines = -(-per_prompt // columns)  # per prompt
    pixels = to_uint8_images(images).permute(0, 2, 3, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    font = label_font([title, *prompts])
    label_w = max([_text_width(font, p) for p in prompts] + [60]) + 12
    top = 18 if title else 0
    sheet = Image.new("RGB", (label_w + columns * (cell + 2), top + len(prompts) * lines * (cell + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for r, prompt in enumerate(prompts):
        y = top + r * lines * (cell + 2)
        draw.text((4, y + cell // 2 - 6), prompt, fill=(0, 0, 0), font=font)
        for i in range(per_prompt):
            tile = Image.fromarray(pixels[r * per_prompt + i]).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + (i % columns) * (cell + 2), y + (i // columns) * (cell + 2)))
    buffer = io.BytesIO()
    fmt = grid_format(path)
    sheet.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return atomic_write_bytes(path, buffer.getvalue())  # never through a link, a full disk in one line


#: The image formats a grid is written in, by the file name's suffix (no suffix: PNG).
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def grid_format(path: str | Path) -> str:
    """The format a grid at `path` is written in; a one-line `UserError` for a suffix that names no such format."""
    suffix = Path(path).suffix.lower()
    if suffix and suffix not in GRID_FORMATS:
        *others, last = GRID_FORMATS
        raise UserError(f"{path}: cannot write a grid as {suffix}; name a {', '.join(others)} or {last} file")
    return GRID_FORMATS.get(suffix, "PNG")


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


@click.command("sample")
@click.argument("run_dir", type=click.Path())
@click.argument("prompts", nargs=-1, required=True)
@click.option("-n", "num", default=8, show_default=True, help="Images per prompt.")
@click.option(
    "-o", "--output", type=click.Path(), help="Grid to write: .png, .jpg or .webp (default RUN_DIR/sample.png)."
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED), help="Noise seed.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="train.KEY=VALUE",
    help="A sampling setting of the pipeline for this draw (repeatable), e.g. --set train.guidance_scale=1.0.",
)
def sample_cmd(run_dir, prompts, num, output, seed, settings):
    """Draw images for PROMPTS from the weights in RUN_DIR.

    RUN_DIR is a run directory, or a run's name (runs/shapes, shapes) for its newest run."""
    progress.phase("drawing: importing torch and the plugins, loading the weights")
    try:
        path = sample(run_dir, prompts, n=num, out=output, seed=seed, settings=settings)
    finally:
        progress.done()
    click.echo(f"wrote {path}")
