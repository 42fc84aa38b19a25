"""Seeded generator of GenEval-style compositional prompts with full metadata.

Categories (each also the record's ``task_type``, see ``records.TASK_TYPES``)::

    object      "a photo of a dog"                      nouns=[dog]
    two_object  "a photo of a dog and a cat"            nouns=[dog, cat]
    counting    "a photo of three cubes"                nouns=[cube], numeracy_info=[(cube, 3)]
    colors      "a photo of a red car"                  nouns=[car], attr_nouns=[red car]
    position    "a photo of a dog left of a cat"        nouns=[dog, cat], spatial_info=(dog, cat, left of)
    color_attr  "a photo of a red car and a blue bench" nouns=[car, bench], attr_nouns=[red car, blue bench]

Scene contract (what a renderer such as the ShapeWorld world may rely on; every scene is
recoverable from the record's fields alone, no parsing of the prompt text):

- the objects to draw are ``nouns`` (distinct within a record);
- an object drawn more than once appears in ``numeracy_info`` with its count; every other
  noun is drawn exactly once;
- an object with a required colour appears in ``attr_nouns`` as ``"{colour} {noun}"``
  (``attr_nouns`` is either empty or has one entry per noun, in ``nouns`` order); objects
  without one may take any colour;
- ``spatial_info`` (obj1, obj2, locality) says where ``obj1`` sits relative to ``obj2``.

With ``color_prob > 0`` the categories without a required colour (object, two_object,
counting, position) also colour their objects with that probability ("a photo of two red
cubes"), filling ``attr_nouns`` the same way.

Record ``i`` of ``sample(n, seed)`` depends only on ``(namespace, seed, i)``: a larger ``n``
extends a dataset without changing its first prompts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from t2ir1.data.records import LOCALITIES, TASK_TYPES, NumeracyItem, PromptRecord, SpatialInfo

# The GenEval categories this generator produces; each is used as the record's task_type.
CATEGORIES = ("object", "two_object", "counting", "colors", "position", "color_attr")

# Localities GenEval's position prompts use (all understood by the reward rules).
DEFAULT_LOCALITIES = ("left of", "right of", "above", "below", "next to")

# The 80 COCO object classes (the vocabulary of GenEval and of T2I-R1's object/spatial rows).
COCO_OBJECTS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# GenEval's colour words.
DEFAULT_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")

# Number words for counts; the largest usable count is the last entry.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# Plurals that the -s / -es rule gets wrong (applied to the last word of a noun).
IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "wolf": "wolves",
}


# Nouns that are plural in form and counted in pairs ("a pair of skis", "two pairs of scissors").
PAIR_NOUNS = frozenset({"skis", "scissors", "glasses", "jeans", "pants", "shorts", "trousers", "sunglasses"})


def article(phrase: str) -> str:
    """``"an"`` before a vowel letter, else ``"a"`` (``"an orange car"``, ``"a dog"``)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    """``"a dog"``, ``"an apple"``, ``"a pair of red skis"``."""
    if phrase.rpartition(" ")[2] in PAIR_NOUNS:
        return f"a pair of {phrase}"
    return f"{article(phrase)} {phrase}"


def pluralize(noun: str, plurals: Mapping[str, str] | None = None) -> str:
    """Plural of a (possibly multi-word) noun: the last word takes -s, -es or -ies.

    ``plurals`` (whole noun -> plural) overrides; then ``PAIR_NOUNS`` (``"pairs of skis"``) and
    ``IRREGULAR_PLURALS`` for the last word.
    """
    if plurals and noun in plurals:
        return plurals[noun]
    head, _, last = noun.rpartition(" ")
    if last in PAIR_NOUNS:
        return f"pairs of {noun}"
    prefix = f"{head} " if head else ""
    if last in IRREGULAR_PLURALS:
        return prefix + IRREGULAR_PLURALS[last]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return f"{prefix}{last}es"
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        return f"{prefix}{last[:-1]}ies"
    return f"{prefix}{last}s"


class CompositionalPromptGenerator:
    """Draws compositional prompts with metadata that matches their text.

    Args:
        objects: object nouns (singular), e.g. ShapeWorld's shapes; None = ``COCO_OBJECTS``.
        colors: colour words of the colour categories (and of ``color_prob``); None = ``DEFAULT_COLORS``.
        categories: categories to draw from, a subset of ``CATEGORIES``.
        category_weights: relative weight per category (missing ones weigh 0); None = uniform.
        min_count: smallest count of the counting category (GenEval: 2).
        max_count: largest count of the counting category (GenEval: 4).
        localities: relations of the position category, each in ``records.LOCALITIES``.
        color_prob: probability that objects of a category without a required colour
            get one anyway (0 = GenEval).
        plurals: noun -> plural overrides for nouns the -s/-es rule gets wrong.
        namespace: first part of every ``prompt_id`` (``f"{namespace}/{category}/{index}"``).
        prefix: text before the objects (GenEval: ``"a photo of"``).
    """

    def __init__(
        self,
        objects: Sequence[str] | None = None,
        colors: Sequence[str] | None = None,
        categories: Sequence[str] = CATEGORIES,
        category_weights: Mapping[str, float] | None = None,
        min_count: int = 2,
        max_count: int = 4,
        localities: Sequence[str] = DEFAULT_LOCALITIES,
        color_prob: float = 0.0,
        plurals: Mapping[str, str] | None = None,
        namespace: str = "compositional",
        prefix: str = "a photo of",
    ) -> None:
        self.objects = tuple(dict.fromkeys(o.strip() for o in (COCO_OBJECTS if objects is None else objects)))
        self.colors = tuple(dict.fromkeys(c.strip() for c in (DEFAULT_COLORS if colors is None else colors)))
        self.categories = tuple(categories)
        self.min_count, self.max_count = min_count, max_count
        self.localities = tuple(localities)
        self.color_prob = color_prob
        self.plurals = dict(plurals or {})
        self.namespace = namespace
        self.prefix = prefix
        self._validate()
        weights = category_weights or {category: 1.0 for category in self.categories}
        unknown = sorted(set(weights) - set(self.categories))
        if unknown:
            raise ValueError(
                f"category_weights has categories {unknown} that are not in categories {list(self.categories)}"
            )
        self.weights = tuple(float(weights.get(category, 0.0)) for category in self.categories)
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"category_weights must be >= 0 with a positive sum; got {dict(weights)}")

    def _validate(self) -> None:
        if not self.objects or not all(self.objects):
            raise ValueError("objects must be a non-empty list of non-empty nouns")
        if not self.categories:
            raise ValueError(f"categories is empty; choose from {', '.join(CATEGORIES)}")
        for category in self.categories:
            if category not in CATEGORIES or category not in TASK_TYPES:
                raise ValueError(f"category {category!r} is unknown; choose from {', '.join(CATEGORIES)}")
        pairs = {"two_object", "position", "color_attr"} & set(self.categories)
        if pairs and len(self.objects) < 2:
            raise ValueError(
                f"categories {sorted(pairs)} need at least 2 distinct objects; got {list(self.objects)}"
            )
        if not all(self.colors):
            raise ValueError("colors must be non-empty words")
        colored = {"colors", "color_attr"} & set(self.categories)
        if (colored or self.color_prob > 0) and not self.colors:
            raise ValueError(f"categories {sorted(colored)} and color_prob > 0 need colors; got none")
        if "color_attr" in self.categories and len(self.colors) < 2:
            raise ValueError("category color_attr needs at least 2 distinct colors")
        if "counting" in self.categories and not 1 <= self.min_count <= self.max_count < len(NUMBER_WORDS):
            raise ValueError(
                f"counts must satisfy 1 <= min_count <= max_count <= {len(NUMBER_WORDS) - 1}; "
                f"got min_count={self.min_count}, max_count={self.max_count}"
            )
        if "position" in self.categories:
            if not self.localities:
                raise ValueError("category position needs at least one locality")
            for locality in self.localities:
                if locality not in LOCALITIES:
                    raise ValueError(f"locality {locality!r} is unknown; choose from {', '.join(LOCALITIES)}")
        if not 0.0 <= self.color_prob <= 1.0:
            raise ValueError(f"color_prob must lie in [0, 1]; got {self.color_prob}")

    def sample(self, n: int, seed: int = 0) -> list[PromptRecord]:
        """``n`` records; record ``i`` depends only on ``(namespace, seed, i)``."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        records = []
        for index in range(n):
            rng = random.Random(f"{self.namespace}:{seed}:{index}")
            category = rng.choices(self.categories, weights=self.weights)[0]
            records.append(self.record(category, rng, index))
        return records

    def __call__(self, n: int, seed: int = 0) -> list[PromptRecord]:
        """Same as ``sample``: lets a generator serve directly as a datamodule ``source``."""
        return self.sample(n, seed)

    def record(self, category: str, rng: random.Random, index: int = 0) -> PromptRecord:
        """One record of ``category`` drawn with ``rng``; ``index`` only names it."""
        if category not in self.categories:
            raise ValueError(f"category {category!r} is not one of this generator's {list(self.categories)}")
        draw = {
            "object": self._object,
            "two_object": self._two_object,
            "counting": self._counting,
            "colors": self._colors,
            "position": self._position,
            "color_attr": self._color_attr,
        }[category]
        fields = draw(rng)
        return PromptRecord(task_type=category, prompt_id=f"{self.namespace}/{category}/{index}", **fields)

    # --- one method per category: each returns PromptRecord fields -------------------------

    def _optional_colors(self, rng: random.Random, count: int) -> list[str | None]:
        if self.color_prob > 0 and rng.random() < self.color_prob:
            return (
                rng.sample(self.colors, count)
                if len(self.colors) >= count
                else rng.choices(self.colors, k=count)
            )
        return [None] * count

    @staticmethod
    def _phrase(noun: str, color: str | None) -> str:
        return f"{color} {noun}" if color else noun

    @staticmethod
    def _attr_nouns(nouns: Sequence[str], colors: Sequence[str | None]) -> tuple[str, ...]:
        return tuple(f"{c} {n}" for n, c in zip(nouns, colors, strict=True)) if all(colors) else ()

    def _object(self, rng: random.Random) -> dict:
        noun = rng.choice(self.objects)
        (color,) = self._optional_colors(rng, 1)
        return {
            "prompt": f"{self.prefix} {with_article(self._phrase(noun, color))}",
            "nouns": (noun,),
            "attr_nouns": self._attr_nouns([noun], [color]),
        }

    def _pair(self, rng: random.Random, colors: Sequence[str | None]) -> dict:
        nouns = rng.sample(self.objects, 2)
        phrases = [with_article(self._phrase(n, c)) for n, c in zip(nouns, colors, strict=True)]
        return {
            "prompt": f"{self.prefix} {phrases[0]} and {phrases[1]}",
            "nouns": tuple(nouns),
            "attr_nouns": self._attr_nouns(nouns, colors),
        }

    def _two_object(self, rng: random.Random) -> dict:
        return self._pair(rng, self._optional_colors(rng, 2))

    def _color_attr(self, rng: random.Random) -> dict:
        return self._pair(rng, rng.sample(self.colors, 2))

    def _colors(self, rng: random.Random) -> dict:
        noun, color = rng.choice(self.objects), rng.choice(self.colors)
        return {
            "prompt": f"{self.prefix} {with_article(f'{color} {noun}')}",
            "nouns": (noun,),
            "attr_nouns": (f"{color} {noun}",),
        }

    def _counting(self, rng: random.Random) -> dict:
        noun = rng.choice(self.objects)
        count = rng.randint(self.min_count, self.max_count)
        (color,) = self._optional_colors(rng, 1)
        if count == 1:
            # "one cube", "one pair of skis": the article's slot holds the number word.
            counted = "one " + with_article(self._phrase(noun, color)).split(" ", 1)[1]
        elif noun in self.plurals:
            counted = f"{NUMBER_WORDS[count]} {self._phrase(self.plurals[noun], color)}"
        else:
            # The colour goes before the noun, and inside "pairs of": "two pairs of red skis".
            counted = f"{NUMBER_WORDS[count]} {pluralize(self._phrase(noun, color))}"
        return {
            "prompt": f"{self.prefix} {counted}",
            "nouns": (noun,),
            "numeracy_info": (NumeracyItem(noun, count),),
            "attr_nouns": self._attr_nouns([noun], [color]),
        }

    def _position(self, rng: random.Random) -> dict:
        first, second = rng.sample(self.objects, 2)
        locality = rng.choice(self.localities)
        colors = self._optional_colors(rng, 2)
        phrases = [with_article(self._phrase(n, c)) for n, c in zip((first, second), colors, strict=True)]
        return {
            "prompt": f"{self.prefix} {phrases[0]} {locality} {phrases[1]}",
            "nouns": (first, second),
            "spatial_info": SpatialInfo(first, second, locality),
            "attr_nouns": self._attr_nouns((first, second), colors),
        }


def sample_prompts(generator: CompositionalPromptGenerator, n: int, seed: int = 0) -> list[PromptRecord]:
    """``generator.sample(n, seed)`` as a plain function, for a Hydra ``_partial_`` source."""
    return generator.sample(n, seed)
