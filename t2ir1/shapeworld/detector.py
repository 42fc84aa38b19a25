"""An exact, programmatic detector for ShapeWorld images.

Three steps, all vectorised over the batch where the maths allows:

1. **Colour segmentation.** Each pixel is read as a blend of the background and
   one palette colour (blurred or decoded edges are such blends) and goes to the
   colour it is at least half made of; a pixel farther than ``color_threshold``
   from every background-colour line (e.g. grey) is *unknown* and belongs to
   nothing, so mild noise from a VQ decoder does not invent objects.
2. **Connected components** per colour (8-connected), via ``scipy.ndimage.label``
   when SciPy is installed, else an equivalent numpy label propagation.
   Components smaller than ``min_area`` pixels are dropped.
3. **Shape classification.** The component's mask, cropped to its bounding box,
   is compared with every shape drawn into a box of the same size (the renderer's
   own masks); the label is the best match and the score its IoU, in ``[0, 1]``.
   This is the fill-ratio test made exact: a square fills its box (1.0), a circle
   ~0.785, a cross 5/9, a triangle ~0.5, and the template also tells shapes of
   equal fill apart (the triangle's mass sits at the bottom, the cross's on its
   two centre lines). A square box is expected:
   the score is multiplied by the aspect ratio ``min(w, h) / max(w, h)``.
   Components scoring below ``min_score`` are dropped.

Boxes are pixel ``(x_min, y_min, x_max, y_max)`` with exclusive max, the same
convention as :class:`~t2ir1.shapeworld.world.SceneObject` boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from t2ir1.rewards.compositional import Detection
from t2ir1.shapeworld.render import shape_mask
from t2ir1.shapeworld.world import WORLD, WorldSpec

try:
    from scipy import ndimage as _ndimage
except ImportError:  # SciPy is optional: the numpy fallback gives the same labels
    _ndimage = None

UNKNOWN = -1
BACKGROUND_INDEX = 0


def to_uint8_array(image: Image.Image | np.ndarray | torch.Tensor, where: str = "image") -> np.ndarray:
    """An ``[H, W, 3]`` uint8 RGB array from a PIL image, an ``[H, W, 3]`` uint8 array,
    or a ``[3, H, W]`` / ``[H, W, 3]`` uint8 tensor."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(
                f"{where}: tensor images must be uint8 in [0, 255], got {image.dtype}; use (x * 255).round().byte()"
            )
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)  # [3, H, W] -> [H, W, 3]
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{where}: array images must be uint8 in [0, 255], got {image.dtype}")
        array = image
    else:
        raise TypeError(
            f"{where}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}"
        )
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"{where}: expected an RGB image of shape [H, W, 3] or [3, H, W], got {tuple(array.shape)}"
        )
    return np.ascontiguousarray(array)


def segment_colors(pixels: np.ndarray, palette: np.ndarray, color_threshold: float) -> np.ndarray:
    """Palette index per pixel: ``pixels`` ``[..., 3]`` uint8, ``palette`` ``[K, 3]`` -> ``[...]`` int64.

    Row 0 of ``palette`` is the background. A pixel is read as a blend
    ``background + alpha * (colour - background)`` of the background and one colour
    (what blur, antialiasing or a VQ decoder makes of an edge): for each colour,
    ``alpha`` is the projection onto that line, clipped to ``[0, 1]``, and the
    residual is the distance to it. The pixel belongs to the colour with the
    smallest residual among those with ``alpha >= 0.5`` and residual <=
    ``color_threshold`` (so an object's edge sits where it covers half the pixel,
    and a pure colour has residual 0). Otherwise it is background (0) when within
    ``color_threshold`` of the background or of a faint blend, else ``UNKNOWN`` (-1):
    colours far from every line, such as grey, belong to nothing.
    """
    background = palette[0].astype(np.float32)
    directions = palette[1:].astype(np.float32) - background  # [K-1, 3]
    offsets = pixels.astype(np.float32) - background  # [..., 3]
    squared_lengths = (directions**2).sum(axis=1)  # [K-1]
    projections = offsets @ directions.T  # [..., K-1]
    alpha = np.clip(projections / squared_lengths, 0.0, 1.0)  # [..., K-1]
    # |q - alpha d|^2 = |q|^2 - 2 alpha q.d + alpha^2 |d|^2, without a [..., K-1, 3] temporary.
    residual2 = (offsets**2).sum(axis=-1, keepdims=True) - alpha * (2 * projections - alpha * squared_lengths)
    near_line = residual2 <= color_threshold**2  # [..., K-1]
    foreground = near_line & (alpha >= 0.5)
    best = np.where(foreground, residual2, np.inf).argmin(axis=-1)  # [...]
    is_foreground = foreground.any(axis=-1)
    is_background = ~is_foreground & near_line.any(axis=-1)
    return np.where(is_foreground, best + 1, np.where(is_background, BACKGROUND_INDEX, UNKNOWN))


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a 2-D bool ``mask``: ``(labels [H, W] int32, count)``, 0 = not in mask."""
    if _ndimage is not None:
        labels, count = _ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        return labels.astype(np.int32), int(count)
    return _label_components_numpy(mask)


def _label_components_numpy(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The numpy fallback of :func:`label_components`: min-label propagation with pointer jumping.

    Every foreground pixel starts with its own flat index; each sweep takes the
    minimum over its 3x3 neighbourhood (restricted to the mask) and then follows
    labels to their own labels (``label = label[label]``), which halves the path
    lengths, until nothing changes. Labels are then renumbered 1..count in
    raster order of each component's first pixel, like SciPy.
    """
    height, width = mask.shape
    sentinel = height * width
    flat_index = np.arange(sentinel, dtype=np.int64).reshape(height, width)
    labels = np.where(mask, flat_index, sentinel)
    while True:
        padded = np.pad(labels, 1, constant_values=sentinel)
        neighbours = np.stack(
            [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        )  # [9, H, W]
        updated = np.where(mask, neighbours.min(axis=0), sentinel)
        lookup = np.append(updated.ravel(), sentinel)  # [H*W + 1]: a label's own current label
        updated = np.where(mask, lookup[updated], sentinel)
        if np.array_equal(updated, labels):
            break
        labels = updated
    roots = np.unique(labels[mask])  # sorted roots = raster order of first pixels
    renumbered = np.zeros(sentinel + 1, dtype=np.int32)
    renumbered[roots] = np.arange(1, len(roots) + 1, dtype=np.int32)
    return renumbered[labels], len(roots)


class ShapeDetector:
    """Detect ShapeWorld objects: ``detect(images) -> list[list[Detection]]``.

    Each :class:`Detection` has ``label`` = shape name, ``box`` = pixel
    ``(x0, y0, x1, y1)``, ``score`` = shape-template IoU in ``[0, 1]`` and
    ``attributes`` = ``{"color": name, "area": pixels, "fill": area / box area}``.
    """

    def __init__(
        self,
        world: WorldSpec = WORLD,
        color_threshold: float = 60.0,
        min_area: int = 16,
        min_score: float = 0.5,
    ) -> None:
        if color_threshold <= 0:
            raise ValueError(f"ShapeDetector: color_threshold must be > 0, got {color_threshold}")
        if min_area < 1:
            raise ValueError(f"ShapeDetector: min_area must be >= 1 pixel, got {min_area}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"ShapeDetector: min_score must be in [0, 1], got {min_score}")
        self.world = world
        self.color_threshold = float(color_threshold)
        self.min_area = int(min_area)
        self.min_score = float(min_score)
        self._palette = world.palette()  # [1 + C, 3], row 0 = background
        self._color_names = world.color_names

    def classify(self, component: np.ndarray) -> tuple[str, float]:
        """Best shape and its score for a component mask cropped to its box (``[h, w]`` bool)."""
        height, width = component.shape
        area = component.sum()
        best_shape, best_iou = self.world.shapes[0], -1.0
        for shape in self.world.shapes:
            template = shape_mask(shape, width, height)
            inter = np.logical_and(component, template).sum()
            iou = inter / (area + template.sum() - inter)
            if iou > best_iou:
                best_shape, best_iou = shape, float(iou)
        aspect = min(width, height) / max(width, height)
        return best_shape, best_iou * aspect

    def detect_one(self, image: Image.Image | np.ndarray | torch.Tensor) -> list[Detection]:
        """Detections of one image, sorted by decreasing score then raster order."""
        return self.detect([image])[0]

    def detect(
        self, images: Sequence[Image.Image | np.ndarray | torch.Tensor] | torch.Tensor
    ) -> list[list[Detection]]:
        """One list of detections per image (any mix of sizes and input types).

        ``images``: a sequence of PIL images / ``[H, W, 3]`` uint8 arrays / ``[3, H, W]``
        uint8 tensors, or one ``[B, 3, H, W]`` uint8 tensor.
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ValueError(
                    f"ShapeDetector.detect: a tensor batch must be [B, 3, H, W] uint8, got {tuple(images.shape)}"
                )
            images = list(images)
        arrays = [to_uint8_array(image, where=f"images[{i}]") for i, image in enumerate(images)]
        results: list[list[Detection]] = [[] for _ in arrays]
        # Same-size images are segmented together in one vectorised pass.
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            by_shape.setdefault(array.shape[:2], []).append(index)
        for indices in by_shape.values():
            batch = np.stack([arrays[i] for i in indices])  # [b, H, W, 3]
            classes = segment_colors(batch, self._palette, self.color_threshold)  # [b, H, W]
            for row, index in enumerate(indices):
                results[index] = self._components(classes[row])
        return results

    def _components(self, classes: np.ndarray) -> list[Detection]:
        detections: list[Detection] = []
        for color_index, color in enumerate(self._color_names, start=1):
            mask = classes == color_index  # [H, W]
            if not mask.any():
                continue
            labels, count = label_components(mask)
            if count == 0:
                continue
            areas = np.bincount(labels.ravel(), minlength=count + 1)  # [count + 1]
            for label in range(1, count + 1):
                if areas[label] < self.min_area:
                    continue
                rows = np.flatnonzero((labels == label).any(axis=1))
                cols = np.flatnonzero((labels == label).any(axis=0))
                y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                component = labels[y0:y1, x0:x1] == label  # [h, w]
                shape, score = self.classify(component)
                if score < self.min_score:
                    continue
                detections.append(
                    Detection(
                        label=shape,
                        box=(float(x0), float(y0), float(x1), float(y1)),
                        score=score,
                        attributes={
                            "color": color,
                            "area": int(areas[label]),
                            "fill": float(areas[label]) / ((x1 - x0) * (y1 - y0)),
                        },
                    )
                )
        detections.sort(key=lambda d: (-d.score, d.box[1], d.box[0]))
        return detections


def detect(
    images: Sequence[Image.Image | np.ndarray | torch.Tensor], **detector_kwargs: float
) -> list[list[Detection]]:
    """Convenience: ``ShapeDetector(**detector_kwargs).detect(images)``."""
    return ShapeDetector(**detector_kwargs).detect(images)
