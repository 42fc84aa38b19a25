"""The compositional prompt generator: text and metadata agree, seeds are deterministic."""

import random

import pytest

from t2ir1.data.compositional import (
    CATEGORIES,
    COCO_OBJECTS,
    DEFAULT_COLORS,
    NUMBER_WORDS,
    CompositionalPromptGenerator,
    pluralize,
    sample_prompts,
    with_article,
)
from t2ir1.data.records import LOCALITIES, TASK_TYPES, PromptRecord

SHAPES = ["circle", "square", "triangle", "cross", "ellipse"]
SHAPE_COLORS = ["red", "green", "blue", "yellow"]


def test_articles_and_plurals():
    assert with_article("dog") == "a dog"
    assert with_article("apple") == "an apple"
    assert with_article("orange car") == "an orange car"
    assert with_article("red skis") == "a pair of red skis"
    assert pluralize("cube") == "cubes"
    assert pluralize("box") == "boxes"
    assert pluralize("bus") == "buses"
    assert pluralize("toothbrush") == "toothbrushes"
    assert pluralize("cherry") == "cherries"
    assert pluralize("toy") == "toys"
    assert pluralize("wine glass") == "wine glasses"
    assert pluralize("person") == "people"
    assert pluralize("knife") == "knives"
    assert pluralize("sheep") == "sheep"
    assert pluralize("scissors") == "pairs of scissors"
    assert pluralize("cactus", {"cactus": "cacti"}) == "cacti"


def test_prompt_text_per_category():
    # One record per category with a one-object / one-colour vocabulary where possible, so the text is fixed.
    rng = random.Random(0)
    one = CompositionalPromptGenerator(
        objects=["cube", "apple"], colors=["red", "blue"], min_count=2, max_count=2
    )
    object_record = one.record("object", random.Random(3))
    assert object_record.prompt in {"a photo of a cube", "a photo of an apple"}
    counting = one.record("counting", rng)
    assert counting.prompt in {"a photo of two cubes", "a photo of two apples"}
    colors = one.record("colors", rng, index=7)
    assert colors.prompt.startswith("a photo of a") and colors.prompt_id == "compositional/colors/7"
    pair = one.record("color_attr", rng)
    assert pair.prompt in {
        f"a photo of {with_article(f'{c1} {n1}')} and {with_article(f'{c2} {n2}')}"
        for c1, c2 in (("red", "blue"), ("blue", "red"))
        for n1, n2 in (("cube", "apple"), ("apple", "cube"))
    }
    position = CompositionalPromptGenerator(objects=["dog", "cat"], localities=["left of"]).record(
        "position", rng
    )
    assert position.prompt in {"a photo of a dog left of a cat", "a photo of a cat left of a dog"}


def test_colored_counting_text():
    generator = CompositionalPromptGenerator(
        objects=["cube"], colors=["red"], categories=["counting"], min_count=2, max_count=2, color_prob=1.0
    )
    record = generator.sample(1, seed=0)[0]
    assert record.prompt == "a photo of two red cubes"
    assert record.attr_nouns == ("red cube",)
    assert [(item.obj_name, item.num) for item in record.numeracy_info] == [("cube", 2)]


def _check_consistent(record: PromptRecord, objects, colors) -> None:
    """The scene contract of the module docstring, checked against the prompt text."""
    assert record.task_type in CATEGORIES and record.task_type in TASK_TYPES
    assert record.prompt_id.startswith(f"compositional/{record.task_type}/")
    assert len(set(record.nouns)) == len(record.nouns) >= 1
    assert all(noun in objects for noun in record.nouns)
    for noun in record.nouns:
        # A counted noun appears in its plural ("people"), with a colour maybe inside ("pairs of red skis").
        shown = pluralize(noun) if record.numeracy_info and record.numeracy_info[0].num > 1 else noun
        assert shown.split()[-1] in record.prompt.split(), (shown, record.prompt)
    if record.attr_nouns:
        assert len(record.attr_nouns) == len(record.nouns)
        for phrase, noun in zip(record.attr_nouns, record.nouns, strict=True):
            color, _, rest = phrase.partition(" ")
            assert rest == noun and color in colors
            assert color in record.prompt.split()
    for item in record.numeracy_info:
        assert item.obj_name in record.nouns
        assert f" {NUMBER_WORDS[item.num]} " in f" {record.prompt} "
    if record.spatial_info is not None:
        info = record.spatial_info
        assert {info.obj1, info.obj2} <= set(record.nouns) and info.obj1 != info.obj2
        assert info.locality in LOCALITIES
        # obj1 is named first, then the relation, then obj2.
        text = record.prompt
        assert text.index(info.obj1) < text.index(f" {info.locality} ") < text.rindex(info.obj2)
    expected = {
        "object": dict(n=1, count=False, spatial=False, colored=None),
        "two_object": dict(n=2, count=False, spatial=False, colored=None),
        "counting": dict(n=1, count=True, spatial=False, colored=None),
        "colors": dict(n=1, count=False, spatial=False, colored=True),
        "position": dict(n=2, count=False, spatial=True, colored=None),
        "color_attr": dict(n=2, count=False, spatial=False, colored=True),
    }[record.task_type]
    assert len(record.nouns) == expected["n"]
    assert bool(record.numeracy_info) == expected["count"]
    assert (record.spatial_info is not None) == expected["spatial"]
    if expected["colored"]:
        assert record.attr_nouns
    if record.task_type == "color_attr":
        assert len({phrase.split()[0] for phrase in record.attr_nouns}) == 2


@pytest.mark.parametrize("color_prob", [0.0, 0.5])
def test_metadata_consistent_coco(color_prob):
    generator = CompositionalPromptGenerator(color_prob=color_prob)
    records = generator.sample(600, seed=3)
    for record in records:
        _check_consistent(record, COCO_OBJECTS, DEFAULT_COLORS)
    assert {r.task_type for r in records} == set(CATEGORIES)
    counts = {item.num for r in records for item in r.numeracy_info}
    assert counts == {2, 3, 4}
    if color_prob == 0.0:
        assert all(not r.attr_nouns for r in records if r.task_type not in ("colors", "color_attr"))
    else:
        assert any(r.attr_nouns for r in records if r.task_type == "counting")


def test_shapeworld_vocabulary_and_round_trip():
    generator = CompositionalPromptGenerator(
        objects=SHAPES, colors=SHAPE_COLORS, max_count=5, namespace="shapeworld"
    )
    records = generator.sample(200, seed=0)
    for record in records:
        assert record.prompt_id.startswith("shapeworld/")
        # Survives the JSONL form and its validation unchanged.
        assert PromptRecord.from_dict(record.to_dict()) == record
        assert all(noun in SHAPES for noun in record.nouns)
    assert max(item.num for r in records for item in r.numeracy_info) == 5


def test_deterministic_per_seed_and_seeds_differ():
    generator = CompositionalPromptGenerator()
    first = generator.sample(50, seed=11)
    assert first == CompositionalPromptGenerator().sample(50, seed=11)
    assert [r.prompt for r in first] != [r.prompt for r in generator.sample(50, seed=12)]
    # A larger n extends the set without changing its first prompts.
    assert generator.sample(80, seed=11)[:50] == first
    assert sample_prompts(generator, 50, seed=11) == first


def test_category_weights():
    generator = CompositionalPromptGenerator(category_weights={"counting": 3.0, "position": 1.0})
    records = generator.sample(400, seed=0)
    kinds = [r.task_type for r in records]
    assert set(kinds) == {"counting", "position"}
    # Expected 300 counting of 400; binomial std ~8.7.
    assert 250 < kinds.count("counting") < 350


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(categories=["spatial"]), "category 'spatial' is unknown"),
        (dict(objects=["cube"]), "need at least 2 distinct objects"),
        (dict(colors=["red"], categories=["color_attr"]), "at least 2 distinct colors"),
        (dict(max_count=11), "max_count <= 10"),
        (dict(localities=["behind"]), "locality 'behind' is unknown"),
        (dict(category_weights={"bogus": 1.0}), "not in categories"),
        (dict(category_weights={"object": 0.0}), "positive sum"),
        (dict(color_prob=1.5), r"color_prob must lie in \[0, 1\]"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompositionalPromptGenerator(**kwargs)


def test_record_rejects_category_outside_generator():
    generator = CompositionalPromptGenerator(categories=["object"])
    with pytest.raises(ValueError, match="not one of this generator's"):
        generator.record("counting", random.Random(0))
