"""Hand-worked checks of the compositional rules (REFERENCE §3)."""

from __future__ import annotations

import sys

import pytest
import torch

from t2ir1.data.records import NumeracyItem, PromptRecord, SpatialInfo
from t2ir1.rewards.compositional import (
    Detection,
    box_iou,
    compositional_score,
    nms,
    numeracy_score,
    object_score,
    position_score,
    spatial_score,
)

# Two disjoint 10x10 boxes: A centred (5, 5), B centred (105, 5): dx = 100, dy = 0, iou = 0.
A = (0.0, 0.0, 10.0, 10.0)
B_RIGHT = (100.0, 0.0, 110.0, 10.0)
B_DOWN = (0.0, 100.0, 10.0, 110.0)  # dy = 100 (image y grows downwards)


@pytest.mark.parametrize(
    ("locality", "box2", "expected"),
    [
        # obj2 to the right of obj1 -> obj1 is left of obj2.
        ("left of", B_RIGHT, 1.0),
        ("on the left of", B_RIGHT, 1.0),
        ("right of", B_RIGHT, 0.0),
        ("on the right of", B_RIGHT, 0.0),
        # obj2 below obj1 (dy > 0) -> obj1 is above obj2.
        ("above", B_DOWN, 1.0),
        ("on the top of", B_DOWN, 1.0),
        ("on top of", B_DOWN, 1.0),
        ("below", B_DOWN, 0.0),
        ("on the bottom of", B_DOWN, 0.0),
        # dy > 0 but the relation is horizontal-dominated -> wrong direction for above.
        ("above", B_RIGHT, 0.0),
    ],
)
def test_directional_localities(locality, box2, expected):
    assert position_score(A, box2, locality) == expected


@pytest.mark.parametrize("locality", ["right of", "on the right of"])
def test_right_of(locality):
    # swap the boxes: obj1 at cx 105, obj2 at cx 5 -> dx = -100 -> right of.
    assert position_score(B_RIGHT, A, locality) == 1.0


@pytest.mark.parametrize("locality", ["below", "on the bottom of"])
def test_below(locality):
    assert position_score(B_DOWN, A, locality) == 1.0


def test_iou_branch():
    # box1 (0,0,10,10), box2 (4,0,14,10): inter 6*10 = 60, union 100+100-60 = 140 -> iou 3/7.
    # centres 5 and 9 -> dx = 4 > 0, dy = 0 -> left of holds; iou >= 0.1 -> 0.1 / (3/7) = 0.7/3.
    box2 = (4.0, 0.0, 14.0, 10.0)
    assert box_iou(A, box2) == pytest.approx(3 / 7)
    assert position_score(A, box2, "left of") == pytest.approx(0.7 / 3)
    # a small overlap below the threshold still scores 1: (9,0,19,10): inter 10, union 190, iou 1/19 < 0.1.
    assert position_score(A, (9.0, 0.0, 19.0, 10.0), "left of") == 1.0


@pytest.mark.parametrize("locality", ["next to", "near", "on side of"])
def test_near_threshold(locality):
    # dx = 100, dy = 0 -> |dy| < 150 -> 1.
    assert position_score(A, B_RIGHT, locality) == 1.0
    # centres (5, 5) and (305, 405): dx = 300, dy = 400, both >= 150 -> 150 / 400 = 0.375.
    far = (300.0, 400.0, 310.0, 410.0)
    assert position_score(A, far, locality) == pytest.approx(0.375)
    # a custom threshold of 50 with dx = 300, dy = 400 -> 50 / 400.
    assert position_score(A, far, locality, near_threshold=50.0) == pytest.approx(0.125)


def test_quirks_above_and_on_top_of_score_zero():
    assert position_score(A, B_DOWN, "above", reference_quirks=True) == 0.0
    assert position_score(A, B_DOWN, "on top of", reference_quirks=True) == 0.0
    # the original does have a branch for "on the top of".
    assert position_score(A, B_DOWN, "on the top of", reference_quirks=True) == 1.0


def test_unknown_locality_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown locality 'behind'"):
        position_score(A, B_RIGHT, "behind")


def _record(**kwargs) -> PromptRecord:
    return PromptRecord(prompt="p", **kwargs)


def test_object_score_fraction_of_nouns():
    record = _record(task_type="object", nouns=("cat", "dog", "red car"))
    detections = [Detection("cat", A, 0.9), Detection("Red  Car", B_RIGHT, 0.5)]
    # cat and red car (case/space-insensitive) found, dog not -> 2/3.
    assert object_score(record, detections) == pytest.approx(2 / 3)
    assert compositional_score(record, detections) == pytest.approx(2 / 3)


def test_spatial_score_uses_most_confident_box():
    record = _record(
        task_type="spatial", nouns=("cat", "dog"), spatial_info=SpatialInfo("cat", "dog", "left of")
    )
    detections = [
        Detection("cat", A, 0.9),
        Detection("cat", (500.0, 0.0, 510.0, 10.0), 0.4),  # less confident: ignored
        Detection("dog", B_RIGHT, 0.8),
    ]
    # 0.2 + 0.2 + 1 / 2 = 0.9
    assert spatial_score(record, detections) == pytest.approx(0.9)
    # only the cat found -> 0.2
    assert spatial_score(record, detections[:2]) == pytest.approx(0.2)
    # nothing found -> 0
    assert spatial_score(record, []) == 0.0
    # a complex row with spatial_info dispatches to the spatial rule too
    complex_record = _record(task_type="complex", nouns=("cat", "dog"), spatial_info=record.spatial_info)
    assert compositional_score(complex_record, detections) == pytest.approx(0.9)


def test_spatial_near_units_and_quirk():
    # 384 px image; cat centred (20, 20), dog centred (364, 364): dx = dy = 344 px.
    record = _record(
        task_type="spatial", nouns=("cat", "dog"), spatial_info=SpatialInfo("cat", "dog", "near")
    )
    detections = [
        Detection("cat", (0.0, 0.0, 40.0, 40.0), 0.9),
        Detection("dog", (344.0, 344.0, 384.0, 384.0), 0.9),
    ]
    # fixed: pixels vs 150 px -> 150 / 344; total 0.4 + (150/344)/2
    fixed = spatial_score(record, detections, image_size=(384, 384))
    assert fixed == pytest.approx(0.4 + 150 / 344 / 2)
    # quirk: normalised boxes (|dx| = 344/384 < 150) -> position 1 -> 0.9
    quirk = spatial_score(record, detections, image_size=(384, 384), reference_quirks=True)
    assert quirk == pytest.approx(0.9)
    # the same boxes given normalised give the same fixed score
    normalized = [Detection(d.label, tuple(v / 384 for v in d.box), d.score) for d in detections]
    assert spatial_score(record, normalized, image_size=(384, 384), box_format="normalized") == pytest.approx(
        fixed
    )
    with pytest.raises(ValueError, match="image_size"):
        spatial_score(record, normalized, box_format="normalized")


def test_spatial_quirk_above():
    record = _record(
        task_type="spatial", nouns=("cat", "dog"), spatial_info=SpatialInfo("cat", "dog", "above")
    )
    detections = [Detection("cat", A, 0.9), Detection("dog", B_DOWN, 0.9)]
    assert spatial_score(record, detections, image_size=(384, 384)) == pytest.approx(0.9)
    # under quirks the position score is 0 -> 0.4
    assert spatial_score(record, detections, image_size=(384, 384), reference_quirks=True) == pytest.approx(
        0.4
    )


def test_nms_merges_overlaps():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    # boxes 0 and 1: inter 90, union 110 -> iou 0.82 > 0.5 -> 1 is suppressed.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_numeracy_score_with_nms():
    record = _record(
        task_type="numeracy",
        nouns=("apple", "cup"),
        numeracy_info=(NumeracyItem("apple", 2), NumeracyItem("cup", 3)),
    )
    detections = [
        Detection("apple", (0, 0, 10, 10), 0.9),
        Detection("apple", (1, 0, 11, 10), 0.8),  # duplicate of the first (iou 0.82): merged
        Detection("apple", (50, 50, 60, 60), 0.7),
        Detection("cup", (100, 100, 110, 110), 0.6),
    ]
    # apple: 2 after NMS == 2 -> 1; cup: 1 != 3 but >= 1 -> 0.2; mean 0.6
    assert numeracy_score(record, detections) == pytest.approx(0.6)
    assert compositional_score(record, detections) == pytest.approx(0.6)
    # without the third apple: apple 1 -> 0.2; cup 0.2 -> 0.2
    assert numeracy_score(record, detections[:2] + detections[3:]) == pytest.approx(0.2)
    # nothing at all -> 0
    assert numeracy_score(record, []) == 0.0


def test_no_nouns_scores_one():
    assert compositional_score(_record(task_type="object"), []) == 1.0


# --- the original's bugs under reference_quirks (REFERENCE §3 "Known bugs"): both values asserted ---


def test_numeracy_nms_quirk_counts_raw_detections():
    """Two apples that are one: xyxy IoU 23/27 = 0.852 -> merged; the (cx, cy, w, h) quirk keeps both.

    100 x 100 image. A = (20, 20, 70, 70), B = (24, 20, 74, 70): inter 46 * 50 = 2300,
    union 2500 + 2500 - 2300 = 2700, IoU 0.852 > 0.5 -> fixed count 1 (!= 2 -> 0.2).
    Quirk: normalised (cx, cy, w, h) read as corners: A = (.45, .45, .5, .5) (area .05 * .05
    = .0025), B = (.49, .45, .5, .5) (area .01 * .05 = .0005); inter .01 * .05 = .0005,
    union .0025 + .0005 - .0005 = .0025, IoU 0.2 <= 0.5 -> both kept: count 2 == 2 -> 1.
    """
    record = _record(task_type="numeracy", nouns=("apple",), numeracy_info=(NumeracyItem("apple", 2),))
    detections = [Detection("apple", (20.0, 20.0, 70.0, 70.0), 0.9), Detection("apple", (24.0, 20.0, 74.0, 70.0), 0.8)]
    assert box_iou(detections[0].box, detections[1].box) == pytest.approx(23 / 27)
    assert compositional_score(record, detections, image_size=(100, 100)) == pytest.approx(0.2)
    assert compositional_score(
        record, detections, image_size=(100, 100), reference_quirks=True
    ) == pytest.approx(1.0)



@pytest.mark.parametrize("torchvision_present", [True, False])
def test_nms_on_degenerate_boxes_matches_torchvision(monkeypatch, torchvision_present):
    """The torch fallback reads boxes exactly as torchvision does, degenerate quirk boxes included."""
    if not torchvision_present:
        monkeypatch.setitem(sys.modules, "torchvision.ops", None)  # the import fails: fallback path
    quirk_boxes = torch.tensor([[0.45, 0.45, 0.5, 0.5], [0.49, 0.45, 0.5, 0.5]])
    # IoU 0.2 (worked out above): kept at 0.5, suppressed at 0.19
    assert nms(quirk_boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(quirk_boxes, torch.tensor([0.9, 0.8]), 0.19).tolist() == [0]
    # "x_max < x_min" on both axes: area (0.2 - 0.6) * (0.3 - 0.5) = 0.08 (not clamped), intersection 0
    inverted = torch.tensor([[0.6, 0.5, 0.2, 0.3], [0.6, 0.5, 0.2, 0.3]])
    assert nms(inverted, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


def test_complex_row_with_spatial_info_dispatch_quirk():
    """A complex row carrying spatial_info: fixed -> spatial rule (max 0.9); quirk -> object rule (max 1)."""
    record = _record(
        task_type="complex", nouns=("cat", "dog"), spatial_info=SpatialInfo("cat", "dog", "right of")
    )
    # the cat at cx 5 is LEFT of the dog at cx 105: the relation fails
    detections = [Detection("cat", A, 0.9), Detection("dog", B_RIGHT, 0.8)]
    # fixed: 0.2 + 0.2 + position 0 / 2 = 0.4
    assert compositional_score(record, detections) == pytest.approx(0.4)
    # quirk: both nouns detected -> 2 / 2 = 1.0, the relation is never looked at
    assert compositional_score(record, detections, image_size=(384, 384), reference_quirks=True) == 1.0
    # quirk: a spatial row without spatial_info raises in the original and scores 0; fixed: objects
    bare = _record(task_type="spatial", nouns=("cat", "dog"))
    assert compositional_score(bare, detections, reference_quirks=True) == 0.0
    assert compositional_score(bare, detections) == 1.0
    # quirk: a GenEval "position" row is not "spatial": object rule
    position = _record(task_type="position", nouns=("cat", "dog"), spatial_info=record.spatial_info)
    assert compositional_score(position, detections, image_size=(384, 384), reference_quirks=True) == 1.0
    assert compositional_score(position, detections) == pytest.approx(0.4)


def test_same_object_twice():
    """"a cat left of a cat": fixed uses the two most confident distinct cats; the original scores 0."""
    record = _record(task_type="spatial", nouns=("cat",), spatial_info=SpatialInfo("cat", "cat", "left of"))
    duplicate = Detection("cat", (1.0, 0.0, 11.0, 10.0), 0.85)  # IoU 0.82 with A: merged by NMS
    detections = [Detection("cat", A, 0.9), duplicate, Detection("cat", B_RIGHT, 0.8)]
    # fixed: distinct cats A and B_RIGHT: 0.2 + 0.2; A is left of B (dx = 100) -> position 1 -> + 0.5
    assert compositional_score(record, detections, image_size=(384, 384)) == pytest.approx(0.9)
    # either order counts: the same boxes with the scores swapped give the same 0.9
    swapped = [Detection("cat", A, 0.8), Detection("cat", B_RIGHT, 0.9)]
    assert compositional_score(record, swapped, image_size=(384, 384)) == pytest.approx(0.9)
    # only one distinct cat (A and its duplicate) -> 0.2, no position term
    assert compositional_score(record, detections[:2], image_size=(384, 384)) == pytest.approx(0.2)
    # quirk: 0 whatever is detected
    assert compositional_score(record, detections, image_size=(384, 384), reference_quirks=True) == 0.0
    assert compositional_score(record, [], image_size=(384, 384), reference_quirks=True) == 0.0


def test_numeracy_quirk_needs_numeracy_info():
    record = _record(task_type="numeracy", nouns=("apple",))
    with pytest.raises(ValueError, match="has no numeracy_info"):
        compositional_score(record, [], reference_quirks=True)
    assert compositional_score(record, []) == 0.0  # fixed: no items -> object rule, nothing found
