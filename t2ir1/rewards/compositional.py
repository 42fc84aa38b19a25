"""Compositional rules on detections: object presence, spatial relations, counts.

Pure functions, no model: a detector (GroundingDINO, the ShapeWorld detector, ...)
turns an image into :class:`Detection` objects and these rules turn detections
into a score in ``[0, 1]`` (REFERENCE §3, the ``gdino`` row and the position rule).

Boxes are ``(x_min, y_min, x_max, y_max)``. Every entry point says which unit it
expects: ``box_format="pixel"`` (default) or ``"normalized"`` (``[0, 1]``), with
``image_size=(width, height)`` to convert between them. The near-distance
threshold is in pixels, as in the original.

``reference_quirks=True`` reproduces the bugs of the original's rules (REFERENCE §3,
"Known bugs"); each is fixed by default:

* ``above`` and ``on top of`` have no branch there, so they score 0
  (``on the top of`` does have one and keeps the normal rule);
* boxes stay normalised to ``[0, 1]`` while the near threshold stays in pixels
  (150), so ``next to`` / ``near`` / ``on side of`` always score 1;
* the counting NMS receives ``(cx, cy, w, h)`` boxes read as corners, so it merges
  almost nothing and counts are raw detections (fixed: NMS on corner boxes);
* dispatch is by ``task_type`` alone: ``complex`` rows that carry ``spatial_info``
  get the object rule (fixed: any row with ``spatial_info`` gets the spatial rule);
* ``obj1 == obj2`` in ``spatial_info`` raises inside the original, which scores 0
  (fixed: the two most confident distinct boxes of that noun, in either order).

The multi-word-noun bug (first + last word only) lives in the detector's caption
handling, :mod:`t2ir1.rewards.gdino`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from t2ir1.data.records import PromptRecord

Box = tuple[float, float, float, float]

LEFT = ("left of", "on the left of")
RIGHT = ("right of", "on the right of")
BELOW = ("below", "on the bottom of")
ABOVE = ("above", "on the top of", "on top of")
NEAR = ("next to", "near", "on side of")
# Localities the original has no branch for (their position score is always 0 there).
QUIRK_UNHANDLED = ("above", "on top of")

OBJECT_TASKS = ("object", "two_object", "colors", "color_attr")
SPATIAL_TASKS = ("spatial", "position")
NUMERACY_TASKS = ("numeracy", "counting")
BOX_FORMATS = ("pixel", "normalized")


@dataclass(frozen=True)
class Detection:
    """One detected object: ``label`` is the prompt noun it was grounded to."""

    label: str
    box: Box
    score: float
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _norm_label(text: str) -> str:
    return " ".join(text.lower().split())


def box_iou(box1: Box, box2: Box) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes (0 for empty union)."""
    inter_w = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    inter_h = max(0.0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    inter = inter_w * inter_h
    area1 = max(0.0, box1[2] - box1[0]) * max(0.0, box1[3] - box1[1])
    area2 = max(0.0, box2[2] - box2[0]) * max(0.0, box2[3] - box2[1])
    union = area1 + area2 - inter
    return inter / union if union > 0 else 0.0


def position_score(
    box1: Box,
    box2: Box,
    locality: str,
    iou_threshold: float = 0.1,
    near_threshold: float = 150.0,
    reference_quirks: bool = False,
) -> float:
    """Score how well ``box1`` (obj1) stands in ``locality`` to ``box2`` (obj2), in ``[0, 1]``.

    ``dx = cx2 - cx1``, ``dy = cy2 - cy1`` (image y grows downwards). Directional
    localities score 0 when the direction is wrong, else 1 when the boxes overlap
    little (``iou < iou_threshold``) and ``iou_threshold / iou`` otherwise. Near
    localities score 1 when ``|dx|`` or ``|dy|`` is below ``near_threshold`` (same
    unit as the boxes), else ``near_threshold / max(|dx|, |dy|)``.
    """
    if reference_quirks and locality in QUIRK_UNHANDLED:
        return 0.0
    cx1, cy1 = (box1[0] + box1[2]) / 2, (box1[1] + box1[3]) / 2
    cx2, cy2 = (box2[0] + box2[2]) / 2, (box2[1] + box2[3]) / 2
    dx, dy = cx2 - cx1, cy2 - cy1

    if locality in NEAR:
        if abs(dx) < near_threshold or abs(dy) < near_threshold:
            return 1.0
        return near_threshold / max(abs(dx), abs(dy))

    if locality in LEFT:
        direction_ok = dx > 0 and abs(dx) > abs(dy)
    elif locality in RIGHT:
        direction_ok = dx < 0 and abs(dx) > abs(dy)
    elif locality in BELOW:
        direction_ok = dy < 0 and abs(dy) > abs(dx)
    elif locality in ABOVE:
        direction_ok = dy > 0 and abs(dy) > abs(dx)
    else:
        known = ", ".join(LEFT + RIGHT + BELOW + ABOVE + NEAR)
        raise ValueError(f"position_score: unknown locality {locality!r}; expected one of {known}")
    if not direction_ok:
        return 0.0
    iou = box_iou(box1, box2)
    return 1.0 if iou < iou_threshold else iou_threshold / iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression: indices ``[K]`` (int64, by decreasing score) of the boxes kept.

    ``boxes`` is ``[N, 4]`` ``(x_min, y_min, x_max, y_max)``, ``scores`` ``[N]``. A box is
    dropped when its IoU with a kept, higher-scoring box is strictly above ``iou_threshold``.
    Uses ``torchvision.ops.nms`` when torchvision is installed, else the same rule in torch,
    arithmetic included (areas are not clamped, so degenerate boxes behave as in torchvision:
    the original's quirk feeds it ``(cx, cy, w, h)`` boxes).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    boxes, scores = boxes.float(), scores.float()
    try:
        from torchvision.ops import nms as tv_nms
    except ImportError:  # torchvision is an optional extra
        tv_nms = None
    if tv_nms is not None:
        return tv_nms(boxes, scores, iou_threshold)
    order = torch.argsort(scores, descending=True)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [N], unclamped as in torchvision
    keep: list[int] = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for index in order.tolist():
        if suppressed[index]:
            continue
        keep.append(index)
        top_left = torch.maximum(boxes[index, :2], boxes[:, :2])  # [N, 2]
        bottom_right = torch.minimum(boxes[index, 2:], boxes[:, 2:])  # [N, 2]
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)  # [N]
        iou = inter / (areas[index] + areas - inter)  # 0 / 0 = nan never suppresses, as in torchvision
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _by_label(detections: Sequence[Detection], label: str) -> list[Detection]:
    wanted = _norm_label(label)
    return [d for d in detections if _norm_label(d.label) == wanted]


def _convert_box(box: Box, source: str, target: str, image_size: tuple[int, int] | None) -> Box:
    if source not in BOX_FORMATS:
        raise ValueError(f"box_format {source!r} is unknown; expected one of {BOX_FORMATS}")
    if source == target:
        return box
    if image_size is None:
        raise ValueError(
            f"boxes are {source!r} but the rule needs {target!r} ones: pass image_size=(width, height)"
        )
    width, height = image_size
    if target == "normalized":
        return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def center_size(box: Box) -> Box:
    """``(x_min, y_min, x_max, y_max)`` -> ``(cx, cy, w, h)``: the layout GroundingDINO predicts."""
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1])


def _distinct_by_confidence(detections: Sequence[Detection], nms_iou: float) -> list[Detection]:
    """``detections`` after NMS at ``nms_iou`` (corner boxes), most confident first."""
    if not detections:
        return []
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)  # [N, 4]
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)  # [N]
    return [detections[i] for i in nms(boxes, scores, nms_iou).tolist()]


def object_score(record: PromptRecord, detections: Sequence[Detection]) -> float:
    """Fraction of ``record.nouns`` with at least one detection of that label (1 with no nouns)."""
    if not record.nouns:
        return 1.0
    found = sum(1 for noun in record.nouns if _by_label(detections, noun))
    return found / len(record.nouns)


def spatial_score(
    record: PromptRecord,
    detections: Sequence[Detection],
    image_size: tuple[int, int] | None = None,
    box_format: str = "pixel",
    iou_threshold: float = 0.1,
    near_threshold: float = 150.0,
    detected_weight: float = 0.2,
    reference_quirks: bool = False,
    nms_iou: float = 0.5,
) -> float:
    """0.2 per object of ``spatial_info`` detected, plus ``position_score / 2`` when both are.

    Each object uses its most confident box. The maximum is therefore
    ``2 * detected_weight + 0.5`` (0.9 with the paper's weights). Under
    ``reference_quirks`` the boxes are normalised before the position rule while
    ``near_threshold`` stays in pixels (the original's bug); otherwise they are in pixels.

    When ``obj1 == obj2`` ("a cat left of a cat") the two objects are the two most
    confident boxes of that noun left after NMS at ``nms_iou``, and the relation holds
    in either order (the better of the two position scores). The original raises in
    that case and scores 0, which ``reference_quirks`` reproduces.
    """
    info = record.spatial_info
    if info is None:
        raise ValueError(f"spatial_score: record {record.prompt!r} has no spatial_info")
    same_noun = _norm_label(info.obj1) == _norm_label(info.obj2)
    if same_noun and reference_quirks:
        return 0.0
    if same_noun:
        distinct = _distinct_by_confidence(_by_label(detections, info.obj1), nms_iou)[:2]
        pairs = [(distinct[0], distinct[1]), (distinct[1], distinct[0])] if len(distinct) == 2 else []
        score = detected_weight * len(distinct)
    else:
        best1 = max(_by_label(detections, info.obj1), key=lambda d: d.score, default=None)
        best2 = max(_by_label(detections, info.obj2), key=lambda d: d.score, default=None)
        pairs = [(best1, best2)] if best1 is not None and best2 is not None else []
        score = detected_weight * ((best1 is not None) + (best2 is not None))
    if not pairs:
        return score
    unit = "normalized" if reference_quirks else "pixel"
    position = max(
        position_score(
            _convert_box(first.box, box_format, unit, image_size),
            _convert_box(second.box, box_format, unit, image_size),
            info.locality,
            iou_threshold,
            near_threshold,
            reference_quirks,
        )
        for first, second in pairs
    )
    return score + position / 2


def numeracy_score(
    record: PromptRecord,
    detections: Sequence[Detection],
    nms_iou: float = 0.5,
    partial_weight: float = 0.2,
    image_size: tuple[int, int] | None = None,
    box_format: str = "pixel",
    reference_quirks: bool = False,
) -> float:
    """Mean over ``numeracy_info`` items of 1 (exact count after NMS), 0.2 (some found) or 0.

    For each item the detections of its ``obj_name`` go through NMS at ``nms_iou``;
    the number kept is the count. Records without items score 1. Under
    ``reference_quirks`` the NMS receives normalised ``(cx, cy, w, h)`` boxes as if they
    were corners, as in the original (it then merges almost nothing: counts are raw
    detections); ``image_size`` is needed to normalise pixel boxes.
    """
    if not record.numeracy_info:
        return 1.0
    total = 0.0
    for item in record.numeracy_info:
        matches = _by_label(detections, item.obj_name)
        if matches:
            corner_boxes = [d.box for d in matches]
            if reference_quirks:
                corner_boxes = [
                    center_size(_convert_box(box, box_format, "normalized", image_size)) for box in corner_boxes
                ]
            boxes = torch.tensor(corner_boxes, dtype=torch.float32)  # [N, 4]
            scores = torch.tensor([d.score for d in matches], dtype=torch.float32)  # [N]
            count = int(nms(boxes, scores, nms_iou).numel())
        else:
            count = 0
        if count == item.num:
            total += 1.0
        elif count >= 1:
            total += partial_weight
    return total / len(record.numeracy_info)


def compositional_score(
    record: PromptRecord,
    detections: Sequence[Detection],
    image_size: tuple[int, int] | None = None,
    box_format: str = "pixel",
    iou_threshold: float = 0.1,
    near_threshold: float = 150.0,
    detected_weight: float = 0.2,
    nms_iou: float = 0.5,
    partial_weight: float = 0.2,
    reference_quirks: bool = False,
) -> float:
    """Dispatch on the record: no nouns -> 1; numeracy -> counts; spatial -> relation; else objects.

    * ``numeracy`` / ``counting`` rows with ``numeracy_info`` -> :func:`numeracy_score`;
    * rows with ``spatial_info`` (``spatial`` / ``position``, and ``complex`` rows of the
      T2I-R1 file that carry one) -> :func:`spatial_score`;
    * everything else (``object``, ``two_object``, ``colors``, ``color_attr``, and the
      attribute categories) -> :func:`object_score`.

    Under ``reference_quirks`` the original's dispatch applies instead: by ``task_type``
    alone, ``spatial`` -> spatial rule (0 when the row has no ``spatial_info``: the
    original raises and scores 0), ``numeracy`` -> counts, every other type (``complex``
    rows with ``spatial_info`` included) -> objects.
    """
    if not record.nouns:
        return 1.0
    spatial_kwargs = {
        "image_size": image_size,
        "box_format": box_format,
        "iou_threshold": iou_threshold,
        "near_threshold": near_threshold,
        "detected_weight": detected_weight,
        "reference_quirks": reference_quirks,
        "nms_iou": nms_iou,
    }
    if reference_quirks:
        if record.task_type == "spatial":
            return spatial_score(record, detections, **spatial_kwargs) if record.spatial_info else 0.0
        if record.task_type == "numeracy":
            if not record.numeracy_info:
                raise ValueError(
                    f"compositional_score: numeracy row {record.prompt!r} has no numeracy_info; the original "
                    "divides by zero there. Fix the data row or score it with reference_quirks=false"
                )
            return numeracy_score(
                record, detections, nms_iou, partial_weight, image_size, box_format, reference_quirks=True
            )
        return object_score(record, detections)
    if record.task_type in NUMERACY_TASKS and record.numeracy_info:
        return numeracy_score(record, detections, nms_iou, partial_weight, image_size, box_format)
    if record.spatial_info is not None:
        return spatial_score(record, detections, **spatial_kwargs)
    return object_score(record, detections)
