"""Image grids with a caption per row, for sample sheets."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write_bytes
from .parts import to_uint8_images


def save_grid(
    images: torch.Tensor, prompts: Sequence[str], path: str | Path, *, title: str = "", cell: int = 64, wrap: int = 16
) -> Path:
    """Save images [len(prompts) * per_prompt, C, H, W] in [-1, 1] as rows labelled with their prompt; a prompt
    with more than `wrap` images takes several lines of `wrap` (64 draws of one prompt make a square, not a strip)."""
    per_prompt = len(images) // max(len(prompts), 1)
    columns = max(1, min(per_prompt, wrap))
    lines = -(-per_prompt // columns)  # per prompt
    pixels = to_uint8_images(images).permute(0, 2, 3, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    font = ImageFont.load_default()
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
    sheet.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())  # never through a link, a full disk in one line


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)
