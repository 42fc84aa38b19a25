"""Captioned sample grids: each image with its prompt, the start of its CoT and its rewards."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def captioned_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    columns: int = 4,
    cell_size: int = 192,
    caption_lines: int = 7,
    font_size: int = 11,
) -> Image.Image:
    """Lay ``images`` out in a grid, each above its (wrapped, truncated) caption."""
    if len(images) != len(captions):
        raise ValueError(f"captioned_grid: {len(images)} images but {len(captions)} captions")
    font = _font(font_size)
    line_height = font_size + 3
    caption_height = caption_lines * line_height + 6
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell_size, rows * (cell_size + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    chars_per_line = max(8, int(cell_size / (font_size * 0.55)))
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = (index % columns) * cell_size
        y = (index // columns) * (cell_size + caption_height)
        grid.paste(image.convert("RGB").resize((cell_size, cell_size), Image.NEAREST), (x, y))
        lines = []
        for paragraph in caption.split("\n"):
            lines.extend(textwrap.wrap(paragraph, chars_per_line) or [""])
        if len(lines) > caption_lines:
            lines = lines[: caption_lines - 1] + [lines[caption_lines - 1][: chars_per_line - 1] + "…"]
        for row, line in enumerate(lines):
            draw.text((x + 3, y + cell_size + 3 + row * line_height), line, fill="black", font=font)
    return grid


def sample_caption(prompt: str, cot: str | None, total: float, members: Mapping[str, float], cot_chars: int = 90) -> str:
    cot_text = "(no CoT)" if cot is None else (cot[:cot_chars] + ("…" if len(cot) > cot_chars else ""))
    member_text = " ".join(f"{name}={value:.2f}" for name, value in members.items())
    return f"{prompt}\nCoT: {cot_text}\nreward {total:.3f} {member_text}"
