"""Draw ShapeWorld scenes with PIL, without antialiasing, so every pixel is an exact palette colour."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from t2ir1.shapeworld.world import COLORS, SHAPE_DRAWERS, Box, Scene, SceneError


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: int | tuple[int, int, int]) -> None:
    """Fill ``shape`` into the half-open ``box`` (ImageDraw's own boxes are inclusive)."""
    if shape not in SHAPE_DRAWERS:
        raise SceneError(f"unknown shape {shape!r}; known shapes: {sorted(SHAPE_DRAWERS)}")
    x0, y0, x1, y1 = box
    kind, vertices = SHAPE_DRAWERS[shape]
    if kind == "ellipse":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    else:
        draw.polygon(vertices(x0, y0, x1, y1), fill=fill)


def render(scene: Scene, colors: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """The scene as an RGB ``PIL.Image`` of ``scene.size`` x ``scene.size`` pixels.

    ``colors`` maps colour names to RGB (default: the world palette).
    """
    palette = COLORS if colors is None else colors
    image = Image.new("RGB", (scene.size, scene.size), tuple(scene.background))
    draw = ImageDraw.Draw(image)
    for index, obj in enumerate(scene.objects):
        if obj.color not in palette:
            raise SceneError(f"object {index}: colour {obj.color!r} is not one of {sorted(palette)}")
        draw_shape(draw, obj.shape, obj.box, tuple(palette[obj.color]))
    return image


def render_batch(scenes: Sequence[Scene]) -> list[Image.Image]:
    """One image per scene."""
    return [render(scene) for scene in scenes]


@lru_cache(maxsize=4096)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """``[height, width]`` bool: the pixels ``shape`` covers when drawn into a box of that size.

    Read-only (cached); the detector compares segmented components against it.
    """
    canvas = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, width, height), 255)
    mask = np.asarray(canvas) > 0
    mask.setflags(write=False)
    return mask
