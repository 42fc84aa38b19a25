"""ShapeWorld prompts, ground-truth scenes for them, and their layout descriptions.

Prompts are GenEval-style records from :class:`~t2ir1.data.compositional.CompositionalPromptGenerator`
over the world vocabulary (shapes as nouns, world colours), categories object,
two_object, counting, colors, position, color_attr. The record fields say what to
draw (the generator's scene contract): every noun once, or ``num`` times when it is
in ``numeracy_info``; a noun's colour is fixed by its ``attr_nouns`` entry, free
otherwise; ``spatial_info`` places obj1 relative to obj2.

* :func:`training_records` — the training prompt stream (datamodule source);
* :func:`heldout_records` — a fixed evaluation set whose prompt texts the training
  stream never produces (a fraction of each category's distinct texts is held out);
* :func:`scene_for` — a random scene that satisfies a record (supervised pairs);
* :func:`describe` — the scene in a few words (what a semantic CoT should say).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from t2ir1.data.compositional import NUMBER_WORDS, CompositionalPromptGenerator, pluralize
from t2ir1.data.records import PromptRecord, RecordError
from t2ir1.shapeworld.world import (
    WORLD,
    Scene,
    SceneObject,
    WorldSpec,
    place_boxes,
    place_pair,
)

# The categories of ShapeWorld prompts (each is the record's task_type).
CATEGORIES: tuple[str, ...] = ("object", "two_object", "counting", "colors", "position", "color_attr")
# Relations of position prompts.
LOCALITIES: tuple[str, ...] = ("left of", "right of", "above", "below", "next to")
# Text before the objects of every prompt.
PREFIX = "a photo of"
# Probability that object/two_object/counting/position prompts also name colours.
COLOR_PROB = 0.5
# Smallest count of counting prompts (GenEval: 2); the largest is WORLD.max_objects.
MIN_COUNT = 2

TRAIN_NAMESPACE = "shapeworld-train"
HELDOUT_NAMESPACE = "shapeworld-heldout"
# Seed of the fixed held-out set.
HELDOUT_SEED = 2505
# Records in the held-out set (40 per category, GenEval-like).
HELDOUT_SIZE = 240
# At most this fraction of a category's distinct prompt texts is held out (at least one is).
HELDOUT_FRACTION = 0.2
# Most draws per category used to list its distinct prompt texts (the small categories have
# 20-72 texts and are listed completely well within this; large ones stop early, see heldout_texts).
SPACE_PROBES = 2000
# Redraws of one training record before giving up on finding a text outside the held-out set.
MAX_REDRAWS = 1000

# Layout words: a 3x3 grid of regions, named by (row, column) of the object's centre.
REGION_NAMES: Mapping[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "centre",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
# Count words of descriptions ("a red square", "two red squares").
COUNT_WORDS: tuple[str, ...] = ("no", "a", "two", "three", "four")


def prompt_generator(
    namespace: str = TRAIN_NAMESPACE,
    color_prob: float = COLOR_PROB,
    category_weights: Mapping[str, float] | None = None,
    world: WorldSpec = WORLD,
) -> CompositionalPromptGenerator:
    """The compositional generator over the world vocabulary."""
    return CompositionalPromptGenerator(
        objects=world.shapes,
        colors=world.color_names,
        categories=CATEGORIES,
        category_weights=category_weights,
        min_count=MIN_COUNT,
        max_count=world.max_objects,
        localities=LOCALITIES,
        color_prob=color_prob,
        namespace=namespace,
        prefix=PREFIX,
    )


@lru_cache(maxsize=8)
def heldout_texts(
    seed: int = HELDOUT_SEED, size: int = HELDOUT_SIZE
) -> Mapping[str, tuple[PromptRecord, ...]]:
    """Category -> the held-out records, one per held-out prompt text, in draw order.

    Each category's distinct texts are listed by up to ``SPACE_PROBES`` draws (stopping
    once there are enough that the cap below binds); the first
    ``max(1, min(ceil(size / 6), floor(HELDOUT_FRACTION * distinct)))`` of them are held out,
    so that small categories (20 colour prompts) keep most of their texts for training.
    """
    generator = prompt_generator(HELDOUT_NAMESPACE)
    per_category = math.ceil(size / len(CATEGORIES))
    chosen: dict[str, tuple[PromptRecord, ...]] = {}
    for category in CATEGORIES:
        rng = random.Random(f"{HELDOUT_NAMESPACE}:{seed}:{category}")
        distinct: dict[str, PromptRecord] = {}
        enough = math.ceil(per_category / HELDOUT_FRACTION)
        for _ in range(SPACE_PROBES):
            record = generator.record(category, rng)
            distinct.setdefault(record.prompt, record)
            if len(distinct) >= enough:
                break
        keep = max(1, min(per_category, math.floor(HELDOUT_FRACTION * len(distinct))))
        chosen[category] = tuple(list(distinct.values())[:keep])
    return chosen


def heldout_prompt_set(seed: int = HELDOUT_SEED) -> frozenset[str]:
    """Every held-out prompt text (the training stream rejects these)."""
    return frozenset(r.prompt for records in heldout_texts(seed).values() for r in records)


def heldout_records(n: int = HELDOUT_SIZE, seed: int = HELDOUT_SEED) -> list[PromptRecord]:
    """The fixed evaluation set: ``n`` records, categories in turn, texts cycling within a category.

    A category with fewer held-out texts than records repeats them (like GenEval's
    several images per prompt); every record has its own ``prompt_id``
    ``shapeworld-heldout/{category}/{j}``, and so its own scene seed.
    """
    if n < 0:
        raise ValueError(f"heldout_records: n must be >= 0, got {n}")
    texts = heldout_texts(seed)
    records = []
    for index in range(n):
        category = CATEGORIES[index % len(CATEGORIES)]
        position = index // len(CATEGORIES)
        pool = texts[category]
        records.append(
            replace(pool[position % len(pool)], prompt_id=f"{HELDOUT_NAMESPACE}/{category}/{position}")
        )
    return records


def training_records(
    n: int,
    seed: int = 0,
    color_prob: float = COLOR_PROB,
    category_weights: Mapping[str, float] | None = None,
    heldout_seed: int = HELDOUT_SEED,
) -> list[PromptRecord]:
    """``n`` training records; none has the text of a held-out record.

    Record ``i`` depends only on ``(seed, i)`` (a larger ``n`` extends the list): its
    category is drawn by ``category_weights`` (None = uniform), then records of that
    category are redrawn until the text is not held out.
    """
    if n < 0:
        raise ValueError(f"training_records: n must be >= 0, got {n}")
    generator = prompt_generator(TRAIN_NAMESPACE, color_prob, category_weights)
    excluded = heldout_prompt_set(heldout_seed)
    records = []
    for index in range(n):
        rng = random.Random(f"{TRAIN_NAMESPACE}:{seed}:{index}")
        category = rng.choices(generator.categories, weights=generator.weights)[0]
        for _ in range(MAX_REDRAWS):
            record = generator.record(category, rng, index)
            if record.prompt not in excluded:
                break
        else:
            raise RuntimeError(
                f"training_records: every {category} prompt drawn was held out; lower HELDOUT_FRACTION"
            )
        records.append(record)
    return records


@dataclass(frozen=True)
class ObjectRequirement:
    """What a record asks of one noun: ``count`` objects of ``shape``, all of ``color`` (None = any)."""

    shape: str
    count: int
    color: str | None = None


def requirements(record: PromptRecord, world: WorldSpec = WORLD) -> list[ObjectRequirement]:
    """One requirement per noun, in ``nouns`` order (the generator's scene contract).

    Raises ``RecordError`` when a noun is not a world shape, a colour is not a world
    colour, a count or colour names a noun the record lacks, or the scene would hold
    more than ``world.max_objects`` objects.
    """
    where = f"record {record.prompt_id or record.prompt!r}"
    counts = {}
    for item in record.numeracy_info:
        if item.obj_name not in record.nouns:
            raise RecordError(
                f"{where}: numeracy_info names {item.obj_name!r}, which is not one of nouns {record.nouns}"
            )
        counts[item.obj_name] = item.num
    colors = {}
    for phrase in record.attr_nouns:
        color, _, noun = phrase.partition(" ")
        if noun not in record.nouns or color not in world.colors:
            raise RecordError(
                f"{where}: attr_nouns entry {phrase!r} must be '<colour> <noun>' with a colour of "
                f"{world.color_names} and a noun of {record.nouns}"
            )
        colors[noun] = color
    if len(set(record.nouns)) != len(record.nouns):
        raise RecordError(
            f"{where}: nouns {record.nouns} repeat; a repeated shape must be a numeracy_info count"
        )
    result = []
    for noun in record.nouns:
        if noun not in world.shapes:
            raise RecordError(
                f"{where}: noun {noun!r} is not a ShapeWorld shape; expected one of {world.shapes}"
            )
        result.append(ObjectRequirement(noun, counts.get(noun, 1), colors.get(noun)))
    total = sum(r.count for r in result)
    if total > world.max_objects:
        raise RecordError(
            f"{where}: asks for {total} objects; ShapeWorld scenes hold at most {world.max_objects}"
        )
    info = record.spatial_info
    if info is not None and (info.obj1 not in record.nouns or info.obj2 not in record.nouns):
        raise RecordError(
            f"{where}: spatial_info objects {info.obj1!r}, {info.obj2!r} must both be in nouns {record.nouns}"
        )
    return result


def scene_seed(record: PromptRecord, seed: int = 0) -> np.random.Generator:
    """A generator seeded from the record's id (or text) and ``seed``: stable across processes."""
    key = f"{record.prompt_id or record.prompt}:{seed}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def scene_for(record: PromptRecord, rng: np.random.Generator | int, world: WorldSpec = WORLD) -> Scene:
    """A random scene that satisfies ``record`` (its ground truth for supervised training).

    Required colours are kept; free ones are uniform. With ``spatial_info`` the two
    objects are placed so the relation holds clearly (``relation_holds(..., clear=True)``);
    everything else is placed uniformly without overlap. ``rng`` may be an int seed.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    wanted = requirements(record, world)
    shapes: list[str] = []
    colors: list[str] = []
    for requirement in wanted:
        for _ in range(requirement.count):
            shapes.append(requirement.shape)
            free = world.color_names[int(rng.integers(len(world.colors)))]
            colors.append(requirement.color or free)
    boxes: list = [None] * len(shapes)
    info = record.spatial_info
    if info is not None:
        first, second = shapes.index(info.obj1), shapes.index(info.obj2)
        boxes[first], boxes[second] = place_pair(rng, info.locality, world)
    placed = [b for b in boxes if b is not None]
    free_boxes = iter(place_boxes(rng, boxes.count(None), world=world, existing=placed))
    boxes = [b if b is not None else next(free_boxes) for b in boxes]
    objects = tuple(SceneObject(s, c, b) for s, c, b in zip(shapes, colors, boxes, strict=True))
    return Scene(objects=objects, size=world.image_size, background=world.background)


def region_at(cx: float, cy: float, size: int) -> tuple[int, int]:
    """(row, column) of the point ``(cx, cy)`` in a 3x3 grid over a ``size`` x ``size`` image."""
    return (min(2, max(0, int(3 * cy // size))), min(2, max(0, int(3 * cx // size))))


def region(obj: SceneObject, size: int) -> tuple[int, int]:
    """(row, column) of the object's centre in a 3x3 grid over a ``size`` x ``size`` image."""
    return region_at(*obj.center, size)


def describe(scene: Scene, record: PromptRecord | None = None) -> str:
    """The layout in words, e.g. ``"Two red squares at the top left and bottom; a blue circle at the centre."``

    Objects of the same colour and shape form one group; groups follow the record's
    noun order when a record is given (spatial obj1 first), else reading order; within
    a group objects are in reading order and repeated regions are said once. The words
    are those of :func:`description_words`; at most 30 words for the 4-object scenes of the world.
    """
    if not scene.objects:
        return "An empty picture."
    ordered = sorted(scene.objects, key=lambda o: (region(o, scene.size), o.center[1], o.center[0]))
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in ordered:
        groups.setdefault((obj.color, obj.shape), []).append(obj)
    if record is not None:
        mentioned = list(record.nouns)
        if record.spatial_info is not None:
            mentioned = [record.spatial_info.obj1, record.spatial_info.obj2, *mentioned]
        rank = {noun: i for i, noun in reversed(list(enumerate(mentioned)))}
        first_seen = {key: i for i, key in enumerate(groups)}
        keys = sorted(groups, key=lambda key: (rank.get(key[1], len(rank)), first_seen[key]))
    else:
        keys = list(groups)
    clauses = []
    for color, shape in keys:
        members = groups[(color, shape)]
        names = list(dict.fromkeys(REGION_NAMES[region(o, scene.size)] for o in members))
        where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        noun = shape if len(members) == 1 else pluralize(shape)
        clauses.append(f"{COUNT_WORDS[len(members)]} {color} {noun} at the {where}")
    text = "; ".join(clauses) + "."
    return text[0].upper() + text[1:]


def description_words(world: WorldSpec = WORLD) -> tuple[str, ...]:
    """Every word :func:`describe` can use (lower case, sorted), punctuation excluded."""
    words = {"at", "the", "and", "an", "empty", "picture", *COUNT_WORDS, *world.colors, *world.shapes}
    words |= {pluralize(shape) for shape in world.shapes}
    words |= {word for name in REGION_NAMES.values() for word in name.split()}
    return tuple(sorted(words))


def prompt_words(world: WorldSpec = WORLD) -> tuple[str, ...]:
    """Every word a ShapeWorld prompt can use (lower case, sorted)."""
    words = set(PREFIX.split()) | {"a", "an", "and", *world.colors, *world.shapes}
    words |= {pluralize(shape) for shape in world.shapes}
    words |= set(NUMBER_WORDS[MIN_COUNT : world.max_objects + 1])
    words |= {word for locality in LOCALITIES for word in locality.split()}
    return tuple(sorted(words))


def vocabulary(world: WorldSpec = WORLD) -> tuple[str, ...]:
    """Every word of prompts and descriptions together (for a tiny tokenizer)."""
    return tuple(sorted(set(prompt_words(world)) | set(description_words(world))))


__all__ = (
    "CATEGORIES",
    "LOCALITIES",
    "ObjectRequirement",
    "describe",
    "description_words",
    "heldout_prompt_set",
    "heldout_records",
    "heldout_texts",
    "prompt_generator",
    "prompt_words",
    "requirements",
    "scene_for",
    "scene_seed",
    "training_records",
    "vocabulary",
)
