"""Layout fidelity: reading a drawing against its layout, the table, and a real run of the shipped checkpoint."""

import json

import pytest

from t2ir1.shapeworld import fidelity, load_policy
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import CATEGORIES, region_at
from t2ir1.shapeworld.render import render
from t2ir1.shapeworld.world import Scene, SceneObject

TOP_LEFT, TOP_RIGHT, BOTTOM_RIGHT = (2, 2, 22, 22), (42, 2, 62, 22), (42, 42, 62, 62)
LAYOUT = Scene(objects=(SceneObject("square", "red", TOP_LEFT), SceneObject("circle", "blue", BOTTOM_RIGHT)))


def _read(drawing: Scene) -> tuple[int, int]:
    return fidelity.read_layout(LAYOUT, ShapeDetector().detect_one(render(drawing)))


def test_the_layout_itself_is_drawn_and_placed():
    assert _read(LAYOUT) == (2, 2)


def test_an_object_in_another_region_is_drawn_but_not_placed():
    moved = Scene(objects=(SceneObject("square", "red", TOP_RIGHT), LAYOUT.objects[1]))
    assert _read(moved) == (2, 1)


def test_a_missing_or_recoloured_object_is_not_drawn():
    assert _read(Scene(objects=(LAYOUT.objects[1],))) == (1, 1)
    recoloured = Scene(objects=(SceneObject("square", "green", TOP_LEFT), LAYOUT.objects[1]))
    assert _read(recoloured) == (1, 1)


def test_one_detection_matches_one_object():
    twins = Scene(
        objects=(SceneObject("square", "red", TOP_LEFT), SceneObject("square", "red", BOTTOM_RIGHT))
    )
    one = Scene(objects=(SceneObject("square", "red", TOP_LEFT),))
    assert fidelity.read_layout(twins, ShapeDetector().detect_one(render(one))) == (1, 1)


def test_region_at_clamps_to_the_grid():
    assert (
        region_at(0, 0, 64) == (0, 0) and region_at(64, 64, 64) == (2, 2) and region_at(40, 10, 64) == (0, 1)
    )


def test_table_counts_objects_and_images_by_hand():
    rows = [
        {"category": "position", "correct": True, "drawn": 2, "placed": 2, "objects": 2},
        {"category": "position", "correct": False, "drawn": 1, "placed": 0, "objects": 2},
        {"category": "object", "correct": False, "drawn": 0, "placed": 0, "objects": 1},
    ]
    table = fidelity.fidelity_table(rows)
    assert table["position"] == {
        "correct": 0.5,
        "drawn": 0.75,
        "placed": 0.5,
        "all_drawn": 0.5,
        "all_placed": 0.5,
    }
    assert table["object"]["drawn"] == 0.0
    assert table["overall"]["drawn"] == pytest.approx(0.375)  # mean over categories, not over rows


def test_layout_records_take_the_first_of_each_category():
    records = fidelity.layout_records(2)
    assert [r.task_type for r in records] == [c for c in CATEGORIES for _ in range(2)]


def test_shipped_checkpoint_run_scores_every_image_and_writes_files(tmp_path):
    table = fidelity.main(["--per-category", "1", "--samples", "2", "--threads", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "fidelity.json").read_text())
    assert len(saved["rows"]) == 2 * len(CATEGORIES)
    assert saved["table"] == table and set(table) == {*CATEGORIES, "overall"}
    for row in saved["rows"]:
        assert 0 <= row["placed"] <= row["drawn"] <= row["objects"]
    assert (tmp_path / "fidelity.png").stat().st_size > 0 and "| position |" in (
        tmp_path / "fidelity.md"
    ).read_text()


def test_same_seed_draws_the_same_images():
    policy = load_policy()
    records = fidelity.layout_records(1)[:2]
    first = fidelity.layout_fidelity(policy, records, samples=2, seed=3)
    again = fidelity.layout_fidelity(policy, records, samples=2, seed=3)
    assert [im.tobytes() for im in first["images"]] == [im.tobytes() for im in again["images"]]
    with pytest.raises(ValueError, match="samples=0"):
        fidelity.layout_fidelity(policy, records, samples=0)
