"""The ShapeWorld reward: the exact detector + the shared compositional rules.

Per image, the detections (label = shape, ``attributes["color"]``) go through
:func:`t2ir1.rewards.compositional.compositional_score`, the same rules as the
GroundingDINO member (REFERENCE §3), chosen by the record:

* ``object`` / ``two_object`` / ``colors`` / ``color_attr``: fraction of nouns detected;
* ``counting``: per count item, 1 for the exact count, 0.2 when some are found, else 0;
* ``position``: 0.2 per object found + position score / 2 (max 0.9), divided by its
  maximum when ``normalize_spatial`` so that a correct scene scores 1.

Records with ``attr_nouns`` (all ``colors`` and ``color_attr`` rows, and the coloured
variants of the other categories) also get the **attribute score**, the fraction of
``attr_nouns`` ("red square") with a detection of that shape in that colour, and
score the mean of the rule score and the attribute score.

:func:`is_correct` is the strict GenEval-style verdict of the held-out accuracy table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.compositional import NUMERACY_TASKS, Detection, compositional_score
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import requirements
from t2ir1.shapeworld.world import WORLD, WorldSpec, relation_holds


def _color(detection: Detection) -> str | None:
    return detection.attributes.get("color")


def attribute_score(record: PromptRecord, detections: Sequence[Detection]) -> float:
    """Fraction of ``record.attr_nouns`` ("<colour> <shape>") with a detection of that shape and colour.

    1.0 when the record has no ``attr_nouns``.
    """
    if not record.attr_nouns:
        return 1.0
    found = 0
    for phrase in record.attr_nouns:
        color, _, shape = phrase.partition(" ")
        found += any(d.label == shape and _color(d) == color for d in detections)
    return found / len(record.attr_nouns)


def is_correct(record: PromptRecord, detections: Sequence[Detection], world: WorldSpec = WORLD) -> bool:
    """GenEval-style strict correctness of one image.

    Every noun's shape is detected exactly as often as asked (1, or its
    ``numeracy_info`` count: no missing and no extra objects of a named shape;
    shapes the prompt does not name may appear), the objects of a noun with a
    required colour all have it, and with ``spatial_info`` some obj1 detection
    stands in the relation to some other obj2 detection
    (:func:`~t2ir1.shapeworld.world.relation_holds`: the position rule at full
    score for directions, boxes at most ``world.near_gap`` apart for ``next to``).
    """
    for requirement in requirements(record, world):
        matches = [d for d in detections if d.label == requirement.shape]
        if len(matches) != requirement.count:
            return False
        if requirement.color is not None and any(_color(d) != requirement.color for d in matches):
            return False
    info = record.spatial_info
    if info is None:
        return True
    firsts = [d for d in detections if d.label == info.obj1]
    seconds = [d for d in detections if d.label == info.obj2]
    return any(
        relation_holds(a.box, b.box, info.locality, world) for a in firsts for b in seconds if a is not b
    )


class ShapeWorldReward:
    """Reward member ``shapeworld``: ``__call__(records, images) -> RewardOutput`` with ``scores[B]`` in ``[0, 1]``.

    ``extras``: ``rule`` ``[B]`` (compositional rule score), ``attribute`` ``[B]``
    (1 where a record has no ``attr_nouns``), ``correct`` ``[B]`` bool (:func:`is_correct`),
    ``num_detections`` ``[B]`` int64, ``detections`` (per image, the detector's list).

    Args:
        color_threshold: RGB distance from every background-colour blend beyond which a pixel matches nothing.
        min_area: smallest component, in pixels, that counts as an object.
        min_score: smallest shape-template IoU that counts as an object.
        near_threshold: ``next to`` distance threshold of the position rule, in pixels.
        iou_threshold: box IoU above which a directional relation is penalised.
        detected_weight: spatial rule's credit per detected object (paper: 0.2).
        nms_iou: NMS IoU of the counting rule.
        partial_weight: counting rule's credit when some but not all are found (paper: 0.2).
        normalize_spatial: divide the spatial rule by its maximum ``2 * detected_weight + 0.5``.
        strict_weight: weight ``w`` of the strict verdict (:func:`is_correct`) in the score,
            ``(1 - w) * score + w * correct`` (0: the rule/attribute score alone). The rules give
            credit for every detected noun and ignore extra objects; ``w > 0`` also pays for
            exact counts, as the held-out accuracy does.
        reference_quirks: reproduce the original's position-rule bugs (REFERENCE §3).
        name: member name in logs.
    """

    def __init__(
        self,
        color_threshold: float = 60.0,
        min_area: int = 16,
        min_score: float = 0.5,
        near_threshold: float = 25.0,
        iou_threshold: float = 0.1,
        detected_weight: float = 0.2,
        nms_iou: float = 0.5,
        partial_weight: float = 0.2,
        normalize_spatial: bool = True,
        reference_quirks: bool = False,
        name: str = "shapeworld",
        strict_weight: float = 0.0,
        world: WorldSpec = WORLD,
    ) -> None:
        if near_threshold <= 0:
            raise ValueError(f"ShapeWorldReward: near_threshold must be > 0 pixels, got {near_threshold}")
        if not 0.0 <= detected_weight <= 0.25:
            raise ValueError(
                f"ShapeWorldReward: detected_weight must be in [0, 0.25] so scores stay <= 1, got {detected_weight}"
            )
        if not 0.0 <= strict_weight <= 1.0:
            raise ValueError(f"ShapeWorldReward: strict_weight must be in [0, 1], got {strict_weight}")
        self.name = name
        self.strict_weight = float(strict_weight)
        self.world = world
        self.detector = ShapeDetector(
            world, color_threshold=color_threshold, min_area=min_area, min_score=min_score
        )
        self.near_threshold = float(near_threshold)
        self.iou_threshold = float(iou_threshold)
        self.detected_weight = float(detected_weight)
        self.nms_iou = float(nms_iou)
        self.partial_weight = float(partial_weight)
        self.normalize_spatial = normalize_spatial
        self.reference_quirks = reference_quirks

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Nothing to load: the detector is exact arithmetic on CPU pixels."""

    def rule_score(
        self, record: PromptRecord, detections: Sequence[Detection], image_size: tuple[int, int]
    ) -> float:
        """The shared compositional rule for one image (``image_size`` = (width, height))."""
        score = compositional_score(
            record,
            detections,
            image_size=image_size,
            box_format="pixel",
            iou_threshold=self.iou_threshold,
            near_threshold=self.near_threshold,
            detected_weight=self.detected_weight,
            nms_iou=self.nms_iou,
            partial_weight=self.partial_weight,
            reference_quirks=self.reference_quirks,
        )
        uses_spatial = record.spatial_info is not None and not (
            record.task_type in NUMERACY_TASKS and record.numeracy_info
        )
        if uses_spatial and record.nouns and self.normalize_spatial:
            score /= 2 * self.detected_weight + 0.5
        return score

    def score_one(
        self, record: PromptRecord, detections: Sequence[Detection], image_size: tuple[int, int]
    ) -> float:
        """Rule score, averaged with the attribute score when the record names colours, then
        mixed with the strict verdict by ``strict_weight``."""
        rule = self.rule_score(record, detections, image_size)
        verdict = is_correct(record, detections, self.world)
        return self.combine(record, rule, attribute_score(record, detections), verdict)

    def combine(self, record: PromptRecord, rule: float, attribute: float, verdict: bool) -> float:
        """The score from its parts: rule (averaged with attribute when the record names colours),
        then ``(1 - strict_weight) * score + strict_weight * verdict``."""
        score = (rule + attribute) / 2 if record.attr_nouns else rule
        return (1.0 - self.strict_weight) * score + self.strict_weight * float(verdict)

    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]``: ``scores`` ``[B]`` float32 on CPU."""
        if len(records) != len(images):
            raise ValueError(
                f"ShapeWorldReward: {len(records)} records but {len(images)} images; pass one image per record"
            )
        detections = self.detector.detect(images)
        sizes = [self._size(image) for image in images]
        rules, attributes, scores, correct = [], [], [], []
        for record, found, size in zip(records, detections, sizes, strict=True):
            rule = self.rule_score(record, found, size)
            attribute = attribute_score(record, found)
            rules.append(rule)
            attributes.append(attribute)
            verdict = is_correct(record, found, self.world)
            scores.append(self.combine(record, rule, attribute, verdict))
            correct.append(verdict)
        return RewardOutput(
            name=self.name,
            scores=torch.tensor(scores, dtype=torch.float32),
            extras={
                "rule": torch.tensor(rules, dtype=torch.float32),
                "attribute": torch.tensor(attributes, dtype=torch.float32),
                "correct": torch.tensor(correct, dtype=torch.bool),
                "num_detections": torch.tensor([len(found) for found in detections], dtype=torch.int64),
                "detections": detections,
            },
            verdicts={"correct": torch.tensor(correct, dtype=torch.bool)},
        )

    @staticmethod
    def _size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
        if isinstance(image, Image.Image):
            return image.size
        shape = tuple(image.shape)
        return (shape[-1], shape[-2]) if shape[0] == 3 else (shape[1], shape[0])
