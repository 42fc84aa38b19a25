"""ShapeWorld: the vocabulary and the scene type of the offline miniature world.

A scene is 1-4 flat, non-overlapping shapes of a few well-separated colours on a
plain background. Everything a later stage must enumerate (shape and colour words,
image size, object sizes) lives in the one :data:`WORLD` spec, so that a tokenizer
or a pretraining script can list every word and pixel value the world can produce.

Boxes are ``(x0, y0, x1, y1)`` in pixels, half-open: an object covers columns
``x0 <= x < x1`` and rows ``y0 <= y < y1`` (so ``x1 - x0`` is its width), the same
convention as detector boxes. Image ``y`` grows downwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from t2ir1.rewards.compositional import ABOVE, BELOW, LEFT, NEAR, RIGHT, position_score

# Shape names double as detector labels and as prompt nouns. Chosen to stay apart under
# blur (a VQ decoder's output): a diamond loses its tips and reads as a circle at 12-16 px,
# so it can be drawn (SHAPE_DRAWERS) but is not part of the default world.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

# Well-separated colours: every pair of palette entries, background included, is at
# least 166 apart in RGB (closest: blue-purple 166, red-purple 182, red-yellow 194).
COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (220, 20, 20),
        "green": (20, 160, 20),
        "blue": (20, 60, 230),
        "yellow": (240, 200, 0),
        "purple": (180, 20, 210),
    }
)

BACKGROUND: tuple[int, int, int] = (255, 255, 255)

Box = tuple[int, int, int, int]


class SceneError(ValueError):
    """A scene that ShapeWorld cannot draw or cannot place."""


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines the world: vocabulary, palette, sizes (pixels)."""

    shapes: tuple[str, ...] = SHAPES
    colors: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: COLORS)
    background: tuple[int, int, int] = BACKGROUND
    # Square images, side in pixels (the tiny Janus VQ uses 8x8 px patches: 8x8 tokens at 64).
    image_size: int = 64
    # Objects are square boxes with a side in [min_object_size, max_object_size]. The default
    # world has one size, 3 x 3 grid cells: at 2 x 2 cells (12 px) the 8 px patches of a VQ
    # model hold a quarter shape each and circles, squares and crosses blur into each other.
    min_object_size: int = 20
    max_object_size: int = 20
    # Placement grid in pixels (0: free placement). With a grid, an object fills whole cells
    # (k x k of them) less `cell_inset` pixels on every side, so its side is
    # grid * k - 2 * cell_inset and its box starts at grid * c + cell_inset. A grid equal to the
    # VQ patch size makes every object a fixed set of patches: the tokens of a scene are then
    # determined by (shape, colour, size, cell), which a tiny image model can learn.
    grid: int = 8
    # Pixels between an object and the edges of its cells (two adjacent objects: 2 x this apart).
    cell_inset: int = 2
    # Empty pixels kept between any two object boxes (so components never touch).
    object_gap: int = 3
    # Empty pixels kept between any object box and the image border.
    border: int = 2
    # Two objects are "next to" each other when the gap between their boxes is at most this.
    near_gap: int = 8
    # Most objects in one scene.
    max_objects: int = 4

    def __post_init__(self) -> None:
        if len(set(self.shapes)) != len(self.shapes) or not self.shapes:
            raise SceneError(f"WorldSpec.shapes must be distinct and non-empty, got {self.shapes}")
        unknown = set(self.shapes) - set(SHAPE_DRAWERS)
        if unknown:
            raise SceneError(
                f"WorldSpec.shapes {sorted(unknown)} cannot be drawn; known shapes: {sorted(SHAPE_DRAWERS)}"
            )
        if not self.colors:
            raise SceneError("WorldSpec.colors must name at least one colour")
        if not 0 < self.min_object_size <= self.max_object_size:
            raise SceneError(
                f"WorldSpec object sizes must satisfy 0 < min ({self.min_object_size}) <= max ({self.max_object_size})"
            )
        if self.max_object_size + 2 * self.border > self.image_size:
            raise SceneError(
                f"WorldSpec.max_object_size {self.max_object_size} plus border does not fit image_size {self.image_size}"
            )
        if self.grid:
            if self.image_size % self.grid or self.cell_inset < self.border:
                raise SceneError(
                    f"WorldSpec.grid {self.grid} must divide image_size {self.image_size} and cell_inset "
                    f"{self.cell_inset} must be >= border {self.border}"
                )
            if 2 * self.cell_inset < self.object_gap:
                raise SceneError(
                    f"WorldSpec: adjacent grid objects are 2 * cell_inset = {2 * self.cell_inset} px apart, "
                    f"less than object_gap {self.object_gap}; raise cell_inset"
                )
            if not self.object_sizes:
                raise SceneError(
                    f"WorldSpec: no side grid * k - 2 * cell_inset (grid {self.grid}, inset {self.cell_inset}) "
                    f"lies in [{self.min_object_size}, {self.max_object_size}]"
                )

    @property
    def object_sizes(self) -> tuple[int, ...]:
        """Every allowed object side in pixels, ascending."""
        sides = range(self.min_object_size, self.max_object_size + 1)
        if not self.grid:
            return tuple(sides)
        return tuple(s for s in sides if (s + 2 * self.cell_inset) % self.grid == 0)

    def cells(self, size: int) -> int:
        """Grid cells spanned by an object of side ``size`` (its box plus the inset on both sides)."""
        return (size + 2 * self.cell_inset) // self.grid

    @property
    def color_names(self) -> tuple[str, ...]:
        return tuple(self.colors)

    def palette(self) -> np.ndarray:
        """``[1 + C, 3]`` uint8: the background first, then the colours in ``color_names`` order."""
        return np.array([self.background, *self.colors.values()], dtype=np.uint8)

    def words(self) -> tuple[str, ...]:
        """Every shape and colour word, singular and plural, sorted (for tokenizers)."""
        return tuple(sorted({*self.shapes, *(plural(s) for s in self.shapes), *self.colors}))


def plural(noun: str) -> str:
    """English plural of a shape noun (``"cross" -> "crosses"``, ``"square" -> "squares"``)."""
    return noun + "es" if noun.endswith(("s", "x", "ch", "sh")) else noun + "s"


@dataclass(frozen=True)
class SceneObject:
    """One flat shape: ``box`` is ``(x0, y0, x1, y1)`` half-open pixels, square (``x1-x0 == y1-y0``)."""

    shape: str
    color: str
    box: Box

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)

    @property
    def size(self) -> int:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class Scene:
    """A full picture: ``objects`` on a ``size`` x ``size`` canvas of colour ``background``."""

    objects: tuple[SceneObject, ...]
    size: int = WorldSpec.image_size
    background: tuple[int, int, int] = BACKGROUND

    def validate(self, world: WorldSpec | None = None) -> None:
        """Raise :class:`SceneError` if an object is unknown, out of the canvas, or overlaps another."""
        world = world or WORLD
        for index, obj in enumerate(self.objects):
            if obj.shape not in world.shapes:
                raise SceneError(f"object {index}: shape {obj.shape!r} is not one of {world.shapes}")
            if obj.color not in world.colors:
                raise SceneError(f"object {index}: colour {obj.color!r} is not one of {world.color_names}")
            x0, y0, x1, y1 = obj.box
            if not (0 <= x0 < x1 <= self.size and 0 <= y0 < y1 <= self.size):
                raise SceneError(
                    f"object {index}: box {obj.box} is outside the {self.size}x{self.size} canvas"
                )
        for i in range(len(self.objects)):
            for j in range(i + 1, len(self.objects)):
                if box_gap(self.objects[i].box, self.objects[j].box) < 1:
                    raise SceneError(
                        f"objects {i} and {j} touch or overlap: {self.objects[i].box} {self.objects[j].box}"
                    )


def box_gap(a: Box, b: Box) -> int:
    """Empty pixels between two half-open boxes along the axis that separates them (<= 0: they touch/overlap)."""
    gap_x = max(b[0] - a[2], a[0] - b[2])
    gap_y = max(b[1] - a[3], a[1] - b[3])
    return max(gap_x, gap_y)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either is empty)."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _square_polygon(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    return [(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]


def _triangle_polygon(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    # Apex at the top centre, flat base on the bottom row.
    return [((x0 + x1 - 1) / 2.0, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]


def _diamond_polygon(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    cx, cy = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
    return [(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)]


def _cross_polygon(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    # A plus sign whose two bars are a third of the box wide (12 vertices, clockwise).
    t = round((x1 - x0) / 3)
    r, b = x1 - 1, y1 - 1
    return [
        (x0 + t, y0), (r - t, y0), (r - t, y0 + t), (r, y0 + t), (r, b - t), (r - t, b - t),
        (r - t, b), (x0 + t, b), (x0 + t, b - t), (x0, b - t), (x0, y0 + t), (x0 + t, y0 + t),
    ]  # fmt: skip


# How each shape is drawn into its box: ("ellipse", None) or ("polygon", vertices(box)).
SHAPE_DRAWERS = {
    "circle": ("ellipse", None),
    "square": ("polygon", _square_polygon),
    "triangle": ("polygon", _triangle_polygon),
    "diamond": ("polygon", _diamond_polygon),
    "cross": ("polygon", _cross_polygon),
}

WORLD = WorldSpec()


def random_scene(
    rng: np.random.Generator,
    num_objects: int | None = None,
    world: WorldSpec = WORLD,
    max_tries: int = 2000,
) -> Scene:
    """A scene of ``num_objects`` (default: uniform in 1..``world.max_objects``) random objects.

    Shapes and colours are uniform and independent; placement is by rejection so
    that boxes keep ``world.object_gap`` between them and ``world.border`` from the edge.
    """
    if num_objects is None:
        num_objects = int(rng.integers(1, world.max_objects + 1))
    shapes = [world.shapes[i] for i in rng.integers(0, len(world.shapes), num_objects)]
    colors = [world.color_names[i] for i in rng.integers(0, len(world.colors), num_objects)]
    boxes = place_boxes(rng, num_objects, world=world, max_tries=max_tries)
    objects = tuple(SceneObject(s, c, b) for s, c, b in zip(shapes, colors, boxes, strict=True))
    return Scene(objects=objects, size=world.image_size, background=world.background)


def sample_box(rng: np.random.Generator, size: int, world: WorldSpec = WORLD) -> Box:
    """A uniformly placed square box of side ``size`` inside the border (on the grid, if any)."""
    if world.grid:
        cx, cy = (int(v) for v in rng.integers(0, world.image_size // world.grid - world.cells(size) + 1, 2))
        x0, y0 = world.grid * cx + world.cell_inset, world.grid * cy + world.cell_inset
        return (x0, y0, x0 + size, y0 + size)
    low, high = world.border, world.image_size - world.border - size
    x0, y0 = (int(v) for v in rng.integers(low, high + 1, 2))
    return (x0, y0, x0 + size, y0 + size)


def sample_size(rng: np.random.Generator, world: WorldSpec = WORLD, largest: int | None = None) -> int:
    """A uniform allowed object side (``world.object_sizes``), at most ``largest`` when given."""
    sizes = [s for s in world.object_sizes if largest is None or s <= largest] or [world.object_sizes[0]]
    return int(sizes[int(rng.integers(len(sizes)))])


def fits(box: Box, others: Sequence[Box], world: WorldSpec = WORLD) -> bool:
    """Whether ``box`` keeps ``world.object_gap`` empty pixels from every box in ``others``."""
    return all(box_gap(box, other) >= world.object_gap for other in others)


def place_boxes(
    rng: np.random.Generator,
    num_objects: int,
    world: WorldSpec = WORLD,
    max_tries: int = 2000,
    existing: Sequence[Box] = (),
) -> list[Box]:
    """``num_objects`` new non-overlapping square boxes that also keep clear of ``existing``.

    Sizes are uniform over ``world.object_sizes``; after every
    ``max_tries // 8`` failed attempts the largest allowed size shrinks by a
    quarter of the range, so crowded scenes still place (deterministically per ``rng``).
    """
    if num_objects < 0 or num_objects + len(existing) > world.max_objects:
        raise SceneError(
            f"cannot place {num_objects} objects next to {len(existing)} existing ones: "
            f"ShapeWorld scenes hold at most {world.max_objects} (WorldSpec.max_objects)"
        )
    step = max(1, math.ceil((world.max_object_size - world.min_object_size) / 4))
    for attempt in range(max_tries):
        largest = max(
            world.min_object_size, world.max_object_size - step * (attempt // max(1, max_tries // 8))
        )
        boxes: list[Box] = []
        for _ in range(num_objects):
            box = sample_box(rng, sample_size(rng, world, largest), world)
            if not fits(box, [*existing, *boxes], world):
                break
            boxes.append(box)
        else:
            return boxes
    raise SceneError(
        f"could not place {num_objects} objects in {max_tries} tries; enlarge the image or shrink objects"
    )


def relation_holds(
    box1: Box, box2: Box, locality: str, world: WorldSpec | None = None, clear: bool = False
) -> bool:
    """Whether ``box1`` (obj1) stands in ``locality`` to ``box2`` (obj2).

    Directional localities use the shared position rule (REFERENCE §3) at full
    score: ``dx = cx2 - cx1`` points the right way, ``|dx| > |dy|`` (or the reverse
    for above/below) and the boxes overlap with IoU < 0.1. Near localities mean the
    boxes are at most ``world.near_gap`` pixels apart. ``clear=True`` is the stricter
    test that ground-truth scenes satisfy, so that small box errors cannot flip them:
    the boxes are separated along the relation's axis by at least ``world.object_gap``
    and the main offset is at least twice the cross offset (near: the gap is in
    ``[object_gap, near_gap]`` and the boxes face each other, their spans overlapping
    on the other axis).
    """
    world = world or WORLD
    if locality in NEAR:
        gap = box_gap(box1, box2)
        if not clear:
            return gap <= world.near_gap
        overlap_x = min(box1[2], box2[2]) - max(box1[0], box2[0])
        overlap_y = min(box1[3], box2[3]) - max(box1[1], box2[1])
        return world.object_gap <= gap <= world.near_gap and max(overlap_x, overlap_y) > 0
    if locality not in LEFT + RIGHT + ABOVE + BELOW:
        raise SceneError(
            f"unknown locality {locality!r}; expected one of {', '.join(LEFT + RIGHT + ABOVE + BELOW + NEAR)}"
        )
    if not clear:
        return position_score(box1, box2, locality) == 1.0
    dx = (box2[0] + box2[2] - box1[0] - box1[2]) / 2.0
    dy = (box2[1] + box2[3] - box1[1] - box1[3]) / 2.0
    if locality in LEFT:
        return box2[0] - box1[2] >= world.object_gap and dx >= 2 * abs(dy)
    if locality in RIGHT:
        return box1[0] - box2[2] >= world.object_gap and -dx >= 2 * abs(dy)
    if locality in ABOVE:
        return box2[1] - box1[3] >= world.object_gap and dy >= 2 * abs(dx)
    return box1[1] - box2[3] >= world.object_gap and -dy >= 2 * abs(dx)


def place_pair(
    rng: np.random.Generator, locality: str, world: WorldSpec = WORLD, max_tries: int = 5000
) -> tuple[Box, Box]:
    """Two boxes with ``relation_holds(box1, box2, locality, clear=True)``.

    Near relations are built directly (box2 beside box1 in a random direction at a
    random gap); directional ones by rejection over uniform placements.
    """
    for _ in range(max_tries):
        size1, size2 = sample_size(rng, world), sample_size(rng, world)
        box1 = sample_box(rng, size1, world)
        if locality in NEAR:
            if world.grid:
                # adjacent cells; box2's cells start within box1's span on the other axis
                gap = 2 * world.cell_inset
                shift = world.grid * int(rng.integers(-world.cells(size2) + 1, world.cells(size1)))
            else:
                gap = int(rng.integers(world.object_gap, world.near_gap + 1))
                # Cross-axis offset of box2's start, keeping the two spans overlapping.
                shift = int(rng.integers(-size2 + 1, size1))
            x0, y0, x1, y1 = box1
            side = int(rng.integers(4))
            if side == 0:  # right of box1
                bx, by = x1 + gap, y0 + shift
            elif side == 1:  # left of box1
                bx, by = x0 - gap - size2, y0 + shift
            elif side == 2:  # below box1
                bx, by = x0 + shift, y1 + gap
            else:  # above box1
                bx, by = x0 + shift, y0 - gap - size2
            box2 = (bx, by, bx + size2, by + size2)
            inside = world.border <= min(bx, by) and max(bx, by) + size2 <= world.image_size - world.border
            if not inside:
                continue
        else:
            box2 = sample_box(rng, size2, world)
        if relation_holds(box1, box2, locality, world, clear=True):
            return box1, box2
    raise SceneError(
        f"could not place a pair {locality!r} in {max_tries} tries; enlarge the image or shrink objects"
    )
