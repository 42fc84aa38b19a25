"""ShapeWorld reward: hand-worked scores per category, strict correctness, configs."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from t2ir1.data.records import NumeracyItem, PromptRecord, SpatialInfo
from t2ir1.rewards.base import Reward
from t2ir1.rewards.compositional import Detection
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.shapeworld.prompts import scene_for, training_records
from t2ir1.shapeworld.render import render
from t2ir1.shapeworld.reward import ShapeWorldReward, attribute_score, is_correct
from t2ir1.shapeworld.world import Scene, SceneObject

CONF = Path(__file__).resolve().parents[2] / "conf"

LEFT, RIGHT = (4, 24, 20, 40), (40, 24, 56, 40)  # centres (12, 32) and (48, 32): dx = 36, dy = 0


def rec(prompt, task_type, nouns, spatial=None, numeracy=(), attr=()):
    return PromptRecord(prompt, task_type, tuple(nouns), spatial, tuple(numeracy), tuple(attr))


def scene(*objects):
    return Scene(tuple(SceneObject(*o) for o in objects))


RECORDS = {
    "object": rec("a photo of a circle", "object", ["circle"]),
    "two_object": rec("a photo of a circle and a square", "two_object", ["circle", "square"]),
    "counting": rec("a photo of three circles", "counting", ["circle"], numeracy=[NumeracyItem("circle", 3)]),
    "colors": rec("a photo of a red square", "colors", ["square"], attr=["red square"]),
    "position": rec(
        "a photo of a circle left of a square",
        "position",
        ["circle", "square"],
        SpatialInfo("circle", "square", "left of"),
    ),
    "color_attr": rec(
        "a photo of a red square and a blue circle",
        "color_attr",
        ["square", "circle"],
        attr=["red square", "blue circle"],
    ),
}

CORRECT = {
    "object": scene(("circle", "green", (20, 20, 40, 40))),
    "two_object": scene(("circle", "red", LEFT), ("square", "red", RIGHT)),
    "counting": scene(
        ("circle", "red", (4, 4, 20, 20)), ("circle", "blue", (40, 4, 56, 20)), ("circle", "red", LEFT)
    ),
    "colors": scene(("square", "red", (20, 20, 40, 40))),
    "position": scene(("circle", "yellow", LEFT), ("square", "purple", RIGHT)),
    "color_attr": scene(("square", "red", LEFT), ("circle", "blue", RIGHT)),
}

# Wrong scenes and their hand-worked scores.
WRONG = {
    # No circle: 0 of 1 nouns.
    "object": (scene(("square", "green", (20, 20, 40, 40))), 0.0),
    # Only the circle: 1 of 2 nouns.
    "two_object": (scene(("circle", "red", LEFT)), 0.5),
    # Two circles for three: some found -> 0.2.
    "counting": (scene(("circle", "red", LEFT), ("circle", "blue", RIGHT)), 0.2),
    # Blue square: object 1, attribute 0 -> (1 + 0) / 2.
    "colors": (scene(("square", "blue", (20, 20, 40, 40))), 0.5),
    # Swapped: both found (0.2 + 0.2), direction wrong (0) -> 0.4 / 0.9.
    "position": (scene(("circle", "yellow", RIGHT), ("square", "purple", LEFT)), 0.4 / 0.9),
    # Colours swapped: object 1, attribute 0 of 2 -> 0.5.
    "color_attr": (scene(("square", "blue", LEFT), ("circle", "red", RIGHT)), 0.5),
}


@pytest.fixture(scope="module")
def reward():
    member = ShapeWorldReward()
    member.setup("cpu")
    return member


def test_is_a_reward(reward):
    assert isinstance(reward, Reward) and reward.name == "shapeworld"


@pytest.mark.parametrize("category", list(RECORDS))
def test_correct_scene_scores_one_and_wrong_scores_by_hand(reward, category):
    record = RECORDS[category]
    wrong_scene, expected = WRONG[category]
    output = reward([record, record], [render(CORRECT[category]), render(wrong_scene)])
    assert output.scores.dtype == torch.float32 and output.scores.shape == (2,)
    assert output.scores[0].item() == pytest.approx(1.0)
    assert output.scores[1].item() == pytest.approx(expected)
    assert output.extras["correct"].tolist() == [True, False]
    # the public route callbacks read (RewardOutput.verdicts), the same verdicts
    assert output.verdicts["correct"].tolist() == [True, False]


def test_position_partial_credit(reward):
    record = RECORDS["position"]
    only_circle = scene(("circle", "yellow", LEFT))
    above_not_left = scene(("circle", "red", (24, 4, 40, 20)), ("square", "red", (24, 40, 40, 56)))
    scores = reward([record, record], [render(only_circle), render(above_not_left)]).scores
    # 0.2 / 0.9 for one object; 0.4 / 0.9 when both are found but |dy| > |dx|.
    assert scores.tolist() == pytest.approx([0.2 / 0.9, 0.4 / 0.9])
    unnormalised = ShapeWorldReward(normalize_spatial=False)([record], [render(CORRECT["position"])]).scores
    assert unnormalised.item() == pytest.approx(0.9)


def test_next_to_by_gap(reward):
    record = rec(
        "a photo of a circle next to a square",
        "position",
        ["circle", "square"],
        SpatialInfo("circle", "square", "next to"),
    )
    close = scene(("circle", "red", (4, 24, 20, 40)), ("square", "red", (24, 24, 40, 40)))  # 4 px apart
    far = scene(("circle", "red", (2, 2, 18, 18)), ("square", "red", (46, 46, 62, 62)))  # dx = dy = 44 > 25
    output = reward([record, record], [render(close), render(far)])
    assert output.extras["correct"].tolist() == [True, False]
    # far: position score 25 / 44 -> (0.4 + 25 / 88) / 0.9.
    assert output.scores.tolist() == pytest.approx([1.0, (0.4 + 25 / 88) / 0.9])


def test_coloured_counting_checks_every_object():
    record = rec(
        "a photo of two red circles",
        "counting",
        ["circle"],
        numeracy=[NumeracyItem("circle", 2)],
        attr=["red circle"],
    )
    red, blue = {"color": "red"}, {"color": "blue"}
    both_red = [Detection("circle", LEFT, 1.0, red), Detection("circle", RIGHT, 1.0, red)]
    one_blue = [Detection("circle", LEFT, 1.0, red), Detection("circle", RIGHT, 1.0, blue)]
    extra = [*both_red, Detection("circle", (24, 44, 40, 60), 1.0, red)]
    distractor = [*both_red, Detection("square", (24, 44, 40, 60), 1.0, blue)]
    assert is_correct(record, both_red) and is_correct(record, distractor)
    assert not is_correct(record, one_blue) and not is_correct(record, extra)
    assert attribute_score(record, one_blue) == 1.0  # some red circle exists
    assert attribute_score(record, [Detection("circle", LEFT, 1.0, blue)]) == 0.0


def test_scores_stay_in_unit_interval_on_random_pairs(reward):
    records = training_records(120, seed=9)
    # Mismatched pairs: each record against the ground-truth scene of another record.
    images = [render(scene_for(r, i)) for i, r in enumerate(records[1:] + records[:1])]
    scores = reward(records, images).scores
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.mean() < 0.9  # mismatches lose reward


def test_mismatched_lengths_raise(reward):
    with pytest.raises(ValueError, match="one image per record"):
        reward([RECORDS["object"]], [])


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=None, overrides=overrides)


def test_reward_config_instantiates_an_ensemble():
    cfg = _compose(["+reward=shapeworld", "reward.weights.shapeworld=0.5"])
    ensemble = instantiate(cfg.reward)
    assert isinstance(ensemble, RewardEnsemble)
    assert isinstance(ensemble.members["shapeworld"], ShapeWorldReward) and ensemble.weights == {
        "shapeworld": 0.5
    }
    ensemble.setup("cpu")
    output = ensemble([RECORDS["colors"]] * 2, [render(CORRECT["colors"]), render(WRONG["colors"][0])])
    # The config mixes half rules, half strict verdict: correct = 0.5 * 1.0 + 0.5 * 1 = 1.0,
    # wrong colour = 0.5 * 0.5 + 0.5 * 0 = 0.25; weighted by 0.5: [0.5, 0.125].
    assert output.scores.tolist() == pytest.approx([0.5, 0.125])


def test_data_config_builds_the_training_stream():
    from t2ir1.data.datamodule import PromptDataModule

    cfg = _compose(["+data=shapeworld", "data.source.n=50"])
    module = instantiate(cfg.data)
    assert isinstance(module, PromptDataModule)
    module.setup()
    records = list(module.train_set) + list(module.val_set)
    # no validation split: no loop would read it, and every prompt of the stream is trained on
    assert len(module.val_set) == 0 and len(module.train_set) == 50
    assert sorted(r.prompt_id for r in records) == sorted(r.prompt_id for r in training_records(50, seed=0))
