"""Image grids of the benchmarks that judge a prompt's images as one 2x2 tile (DPG-Bench, OneIG-Bench).

Their official generators save one grid per prompt and their scorers cut it back into tiles;
t2ir1 saves both (the singles are what the harness scores, the grid is what the official
scorer reads), and rebuilds the singles from a grid when only grids are on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from t2ir1.evaluate.base import Benchmark, EvalItem


def tile(images: Sequence[Image.Image], rows: int = 2, cols: int = 2) -> Image.Image:
    """Row-major grid of ``rows * cols`` equally sized images (tile k at row k // cols, column k % cols)."""
    if len(images) != rows * cols:
        raise ValueError(f"a {rows}x{cols} grid needs {rows * cols} images, got {len(images)}")
    width, height = images[0].size
    if any(im.size != (width, height) for im in images):
        raise ValueError(f"grid tiles must share one size; got {[im.size for im in images]}")
    grid = Image.new("RGB", (cols * width, rows * height))
    for k, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((k % cols) * width, (k // cols) * height))
    return grid


def split(grid: Image.Image, rows: int = 2, cols: int = 2) -> list[Image.Image]:
    """The tiles of a grid, row-major (the inverse of :func:`tile` when the sides divide evenly)."""
    width, height = grid.size
    if width % cols or height % rows:
        raise ValueError(f"a {width}x{height} grid does not split into {rows}x{cols} equal tiles")
    w, h = width // cols, height // rows
    return [
        grid.crop(((k % cols) * w, (k // cols) * h, (k % cols + 1) * w, (k // cols + 1) * h))
        for k in range(rows * cols)
    ]


class GridBenchmark(Benchmark):
    """A benchmark whose ``n_per_prompt = rows * cols`` images of a prompt also live as one grid."""

    grid_rows: int = 2
    grid_cols: int = 2

    def grid_path(self, root: Path, item: EvalItem) -> Path:
        return root / "grids" / f"{item.key}.png"

    def finalize_item(self, root: Path, item: EvalItem) -> None:
        """Write the grid once every single exists; cut an existing grid into missing singles."""
        singles = [self.image_path(root, item, k) for k in range(self.n_per_prompt)]
        grid_path = self.grid_path(root, item)
        have = [p.is_file() for p in singles]
        if all(have) and not grid_path.is_file():
            opened = [Image.open(p) for p in singles]
            try:
                grid = tile([im.convert("RGB") for im in opened], self.grid_rows, self.grid_cols)
            finally:
                for im in opened:
                    im.close()
            grid_path.parent.mkdir(parents=True, exist_ok=True)
            staging = grid_path.with_name(grid_path.name + ".tmp")
            grid.save(staging, format="PNG")
            staging.replace(grid_path)
        elif not all(have) and grid_path.is_file():
            with Image.open(grid_path) as opened:
                tiles = split(opened.convert("RGB"), self.grid_rows, self.grid_cols)
            for path, image, exists in zip(singles, tiles, have, strict=True):
                if not exists:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    image.save(path, format="PNG")
