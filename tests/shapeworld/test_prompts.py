"""ShapeWorld prompts: the training stream, the held-out set, ground-truth scenes, descriptions."""

from collections import Counter

import numpy as np
import pytest

from t2ir1.data.records import NumeracyItem, PromptRecord, RecordError, SpatialInfo
from t2ir1.shapeworld import prompts
from t2ir1.shapeworld.prompts import (
    CATEGORIES,
    describe,
    heldout_prompt_set,
    heldout_records,
    requirements,
    scene_for,
    scene_seed,
    training_records,
    vocabulary,
)
from t2ir1.shapeworld.render import render
from t2ir1.shapeworld.reward import ShapeWorldReward
from t2ir1.shapeworld.world import WORLD, Scene, SceneObject


def test_training_stream_is_deterministic_and_extends():
    first = training_records(300, seed=3)
    assert first == training_records(300, seed=3)
    assert training_records(100, seed=3) == first[:100]
    assert first != training_records(300, seed=4)
    # All six categories appear, with shape nouns only.
    assert set(Counter(r.task_type for r in first)) == set(CATEGORIES)
    assert all(set(r.nouns) <= set(WORLD.shapes) for r in first)


def test_heldout_never_appears_in_training():
    held = heldout_records()
    assert len(held) == 240
    assert Counter(r.task_type for r in held) == {category: 40 for category in CATEGORIES}
    # Disjoint ids, unique ids within the held-out set.
    assert len({r.prompt_id for r in held}) == 240
    assert all(r.prompt_id.startswith("shapeworld-heldout/") for r in held)
    train = training_records(5000, seed=0)
    assert all(r.prompt_id.startswith("shapeworld-train/") for r in train)
    held_texts = {r.prompt for r in held}
    assert held_texts == heldout_prompt_set()
    assert not held_texts & {r.prompt for r in train}
    # Small categories keep most of their texts for training: 4 of the 20 colour prompts are
    # held out as colour prompts (a coloured object prompt may hold out one more with the same
    # text); the training stream produces every other one.
    assert len(prompts.heldout_texts()["colors"]) == 4
    all_colors = {f"a photo of a {c} {s}" for c in WORLD.colors for s in WORLD.shapes}
    trained_colors = {r.prompt for r in train if r.task_type == "colors"}
    assert trained_colors == all_colors - held_texts
    assert len(trained_colors) >= 14


def test_heldout_is_fixed():
    assert heldout_records(60) == heldout_records()[:60]
    assert [r.prompt for r in heldout_records(6)] == [r.prompt for r in heldout_records(6)]


def test_scene_for_satisfies_every_record():
    """Rendered ground-truth scenes are judged correct by detector + is_correct: 100%."""
    records = training_records(300, seed=1) + heldout_records(60)
    scenes = [scene_for(r, scene_seed(r)) for r in records]
    for record, scene in zip(records, scenes, strict=True):
        scene.validate()
        wanted = Counter()
        for requirement in requirements(record):
            wanted[requirement.shape] += requirement.count
        assert Counter(o.shape for o in scene.objects) == wanted
    reward = ShapeWorldReward()
    output = reward(records, [render(s) for s in scenes])
    assert output.extras["correct"].all()
    assert (output.scores == 1.0).all()


def test_scene_for_keeps_required_colours_and_is_seeded():
    record = PromptRecord(
        "a photo of three red circles",
        "counting",
        nouns=("circle",),
        numeracy_info=(NumeracyItem("circle", 3),),
        attr_nouns=("red circle",),
    )
    scene = scene_for(record, 0)
    assert [(o.shape, o.color) for o in scene.objects] == [("circle", "red")] * 3
    assert scene_for(record, 0) == scene and scene_for(record, 1) != scene
    assert scene_for(record, np.random.default_rng(0)) == scene


def test_describe_by_hand():
    scene = Scene(
        (
            SceneObject("square", "red", (2, 2, 16, 16)),  # centre (9, 9): top left
            SceneObject("square", "red", (46, 46, 60, 60)),  # centre (53, 53): bottom right
            SceneObject("circle", "blue", (24, 24, 40, 40)),  # centre (32, 32): centre
        )
    )
    assert describe(scene) == "Two red squares at the top left and bottom right; a blue circle at the centre."
    record = PromptRecord(
        "a photo of a circle above a square",
        "position",
        nouns=("circle", "square"),
        spatial_info=SpatialInfo("circle", "square", "above"),
    )
    # With a record, groups follow its nouns (obj1 first).
    assert (
        describe(scene, record)
        == "A blue circle at the centre; two red squares at the top left and bottom right."
    )


def test_descriptions_are_short_and_in_vocabulary():
    words = set(vocabulary())
    for record in training_records(400, seed=2):
        text = describe(scene_for(record, scene_seed(record)), record)
        tokens = text.lower().replace(".", " ").replace(",", " ").replace(";", " ").split()
        assert len(tokens) <= 30
        assert set(tokens) <= words, set(tokens) - words
        assert set(record.prompt.split()) <= words


def test_requirements_reject_records_outside_the_world():
    with pytest.raises(RecordError, match="not a ShapeWorld shape"):
        requirements(PromptRecord("a photo of a dog", "object", nouns=("dog",)))
    with pytest.raises(RecordError, match="attr_nouns"):
        requirements(
            PromptRecord("a photo of a pink circle", "colors", nouns=("circle",), attr_nouns=("pink circle",))
        )
    too_many = PromptRecord(
        "a photo of four circles and a square",
        "counting",
        nouns=("circle", "square"),
        numeracy_info=(NumeracyItem("circle", 4),),
    )
    with pytest.raises(RecordError, match="at most 4"):
        requirements(too_many)
