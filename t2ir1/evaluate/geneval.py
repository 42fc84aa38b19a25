"""GenEval (Ghosh et al., 2023): object-focused correctness of 4 images per prompt.

Metadata: GenEval's ``evaluation_metadata.jsonl``, one JSON object per line,
``{"tag", "include": [{"class", "count", "color"?, "position"?: [relation, index]}],
"exclude"?: [{"class", "count"}], "prompt"}``. Images: ``<out>/<00000>/samples/<0000>.png``
with the prompt's metadata line in ``<out>/<00000>/metadata.jsonl`` (GenEval's own layout).

An image is **correct** when (GenEval's rules, the same for all six tags):

* every ``include`` clause holds: at least ``count`` detections of ``class``; with ``color``,
  at least ``count`` of the ``count`` most confident ones are classified that colour; with
  ``position: [rel, j]``, each of them stands in ``rel`` to every object matched by clause
  ``j`` (which must itself have matched);
* no ``exclude`` clause holds: fewer than ``count`` detections of ``class``.

Relations (GenEval's ``relative_position``): the centre offset of A from B, with each
axis shrunk by ``position_threshold * (size_a + size_b)``, normalised by the raw offset's
length; ``left of`` when its x < -0.5, ``right of`` > 0.5, ``above`` y < -0.5, ``below`` > 0.5.

Score: fraction of correct images per tag; overall = mean over the six tags.

Detectors: ``detector=mask2former`` runs transformers' Mask2Former (COCO instance segmentation,
GenEval's model family) with GenEval's own thresholds (0.3, counting 0.9, no NMS) and classifies
colour on the box crop with the pixels outside the mask painted grey, as GenEval does; the
official checkpoint is mmdetection's Mask2Former Swin-S, whose weights differ from the
transformers ones (``facebook/mask2former-swin-small-coco-instance``), so numbers move by a few
points. ``detector=grounding_dino`` (the default here) is described next.

**Differences from the official scorer** with ``grounding_dino`` (mmdet has no maintained pip
package here): detection is GroundingDINO (transformers) prompted with
the metadata's class names instead of a closed-set COCO detector, so scores are phrase
logits, not class confidences -- the thresholds below are for those; duplicate boxes of
one object are merged by NMS (``max_overlap``; GenEval keeps all, Mask2Former rarely
duplicates); colour is CLIP zero-shot on the box crop, as GenEval does when it has no
mask (GenEval pastes the segmentation mask on grey first). Expected effect: counting and
position within a few points of the official numbers; colour slightly lower where
background pixels in the box mislead CLIP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from t2ir1.evaluate.base import Benchmark, BenchmarkFileError, EvalItem, ImageEntry, read_jsonl
from t2ir1.evaluate.judges import ClipJudge, GroundingDetector, Mask2FormerDetector, masked_crop
from t2ir1.rewards.compositional import Box, Detection, nms

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
COLOR_TEMPLATES = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object")


# ----------------------------------------------------------------------------- metadata
def validate_metadata(row: Any, where: str) -> dict[str, Any]:
    """Check one GenEval metadata row; raises :class:`BenchmarkFileError` naming ``where``."""

    def fail(message: str) -> BenchmarkFileError:
        return BenchmarkFileError(f"{where}: {message} (GenEval metadata: see djghosh13/geneval prompts/)")

    if not isinstance(row, dict):
        raise fail(f"expected a JSON object, got {type(row).__name__}")
    if row.get("tag") not in TAGS:
        raise fail(f"'tag' is {row.get('tag')!r}; expected one of {', '.join(TAGS)}")
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise fail("'prompt' must be a non-empty string")
    include = row.get("include")
    if not isinstance(include, list) or not include:
        raise fail("'include' must be a non-empty list of {class, count, color?, position?}")
    for index, clause in enumerate(include):
        name = f"include[{index}]"
        if (
            not isinstance(clause, dict)
            or not isinstance(clause.get("class"), str)
            or not clause["class"].strip()
        ):
            raise fail(f"{name} needs a non-empty string 'class'")
        count = clause.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise fail(f"{name}.count must be an integer >= 1, got {count!r}")
        if "color" in clause and clause["color"] not in COLORS:
            raise fail(f"{name}.color is {clause['color']!r}; expected one of {', '.join(COLORS)}")
        if "position" in clause:
            position = clause["position"]
            ok = (
                isinstance(position, list)
                and len(position) == 2
                and position[0] in RELATIONS
                and isinstance(position[1], int)
                and 0 <= position[1] < index
            )
            if not ok:
                raise fail(
                    f"{name}.position must be [relation, j] with relation in {RELATIONS} and j an earlier clause, got {position!r}"
                )
    for index, clause in enumerate(row.get("exclude") or []):
        count = clause.get("count") if isinstance(clause, dict) else None
        if (
            not isinstance(clause, dict)
            or not isinstance(clause.get("class"), str)
            or not isinstance(count, int)
            or count < 1
        ):
            raise fail(f"exclude[{index}] must be {{'class': str, 'count': int >= 1}}, got {clause!r}")
    return row


def read_metadata(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a GenEval metadata JSONL file (blank lines skipped), validated."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkFileError(
            f"GenEval metadata {path} does not exist: clone djghosh13/geneval and pass "
            "benchmark.metadata=<clone>/prompts/evaluation_metadata.jsonl"
        )
    rows = []
    for row in read_jsonl(path, "GenEval metadata", "pass benchmark.metadata=<clone>/prompts/evaluation_metadata.jsonl"):
        number = row.pop("_line")
        rows.append(validate_metadata(row, f"{path}:{number}"))
    return rows


# ----------------------------------------------------------------------------- rules
def relative_position(box_a: Box, box_b: Box, position_threshold: float) -> set[str]:
    """Relations of box A to box B (``left of`` / ``right of`` / ``above`` / ``below``), GenEval's rule."""
    center_a = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)
    center_b = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    size_a = (abs(box_a[2] - box_a[0]), abs(box_a[3] - box_a[1]))
    size_b = (abs(box_b[2] - box_b[0]), abs(box_b[3] - box_b[1]))
    offset = (center_a[0] - center_b[0], center_a[1] - center_b[1])
    shrunk = [
        math.copysign(max(abs(offset[k]) - position_threshold * (size_a[k] + size_b[k]), 0.0), offset[k])
        for k in range(2)
    ]
    if all(abs(v) < 1e-3 for v in shrunk):
        return set()
    length = math.hypot(*offset)
    dx, dy = shrunk[0] / length, shrunk[1] / length
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate_metadata(
    metadata: dict[str, Any],
    objects: dict[str, list[Detection]],
    colors_of,
    position_threshold: float = 0.1,
) -> tuple[bool, list[str]]:
    """GenEval's verdict for one image.

    Args:
        objects: class -> its detections, most confident first.
        colors_of: ``(classname, detections) -> list[str]`` colour names, one per detection.
    Returns:
        ``(correct, reasons)``; reasons say what failed.
    """
    correct = True
    reasons: list[str] = []
    matched: list[list[Detection] | None] = []
    for clause in metadata["include"]:
        classname, count = clause["class"], clause["count"]
        found = objects.get(classname, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                colors = colors_of(classname, found)
                if colors.count(clause["color"]) < count:
                    ok = False
                    reasons.append(f"expected {clause['color']} {classname}>={count}, found colours {colors}")
            if "position" in clause and ok:
                relation, target = clause["position"]
                targets = matched[target]
                if targets is None:
                    ok = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    for obj in found:
                        for other in targets:
                            actual = relative_position(obj.box, other.box, position_threshold)
                            if relation not in actual:
                                ok = False
                                reasons.append(
                                    f"expected {classname} {relation} target, found {sorted(actual) or 'no relation'}"
                                )
                                break
                        if not ok:
                            break
        correct = correct and ok
        matched.append(found if ok else None)
    for clause in metadata.get("exclude") or []:
        present = len(objects.get(clause["class"], []))
        if present >= clause["count"]:
            correct = False
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {present}")
    return correct, reasons


def group_detections(
    detections: Sequence[Detection], threshold: float, max_objects: int, max_overlap: float
) -> dict[str, list[Detection]]:
    """Class -> detections above ``threshold``, most confident first, at most ``max_objects``, NMS at ``max_overlap``.

    ``max_overlap >= 1`` keeps every box (GenEval's default with Mask2Former).
    """
    grouped: dict[str, list[Detection]] = {}
    for label in dict.fromkeys(d.label for d in detections):
        kept = sorted(
            (d for d in detections if d.label == label and d.score > threshold), key=lambda d: -d.score
        )
        kept = kept[:max_objects]
        if kept and max_overlap < 1:
            boxes = torch.tensor([d.box for d in kept], dtype=torch.float32)  # [n, 4]
            scores = torch.tensor([d.score for d in kept], dtype=torch.float32)  # [n]
            kept = [kept[i] for i in nms(boxes, scores, max_overlap).tolist()]
        if kept:
            grouped[label] = kept
    return grouped


class GenEvalBenchmark(Benchmark):
    """GenEval with an open-vocabulary detector and CLIP colour classification.

    Args:
        metadata: path of GenEval's ``evaluation_metadata.jsonl``.
        n_per_prompt: images per prompt (GenEval: 4).
        detector: ``grounding_dino`` or ``mask2former`` (a dict is read as grounding_dino kwargs).
        grounding_dino: kwargs of :class:`~t2ir1.evaluate.judges.GroundingDetector`, plus its
            ``counting_threshold`` and ``max_overlap``.
        mask2former: kwargs of :class:`~t2ir1.evaluate.judges.Mask2FormerDetector`, plus its
            ``counting_threshold`` and ``max_overlap`` (GenEval's: 0.9 and 1.0).
        clip: kwargs of :class:`~t2ir1.evaluate.judges.ClipJudge` (GenEval: ViT-L/14 OpenAI).
        threshold: detection score threshold (GenEval: 0.3).
        counting_threshold: threshold for ``counting`` prompts (null: the detector's own).
        max_objects: most detections kept per class (GenEval: 16).
        max_overlap: NMS IoU between boxes of one class (null: the detector's own; 1.0 = none).
        position_threshold: the relation rule's size margin (GenEval: 0.1).
        colors: the colour classes (GenEval's ten).
        color_templates: zero-shot templates with ``{c}`` (colour) and ``{obj}`` (class).
    """

    name = "geneval"
    categories = TAGS

    def __init__(
        self,
        metadata: str,
        n_per_prompt: int = 4,
        detector: str | dict | None = "grounding_dino",
        clip: dict | None = None,
        threshold: float = 0.3,
        counting_threshold: float | None = None,
        max_objects: int = 16,
        max_overlap: float | None = None,
        position_threshold: float = 0.1,
        colors: Sequence[str] = COLORS,
        color_templates: Sequence[str] = COLOR_TEMPLATES,
        name: str = "geneval",
        grounding_dino: dict | None = None,
        mask2former: dict | None = None,
    ):
        self.name = name
        self.metadata_path = metadata
        self.n_per_prompt = n_per_prompt
        if isinstance(detector, dict) or detector is None:
            grounding_dino, detector = {**(grounding_dino or {}), **(detector or {})}, "grounding_dino"
        own_defaults = {"grounding_dino": (0.35, 0.5), "mask2former": (0.9, 1.0)}
        if detector not in own_defaults:
            raise ValueError(f"geneval: detector {detector!r} is not one of {sorted(own_defaults)}")
        settings = dict((grounding_dino if detector == "grounding_dino" else mask2former) or {})
        own_counting = settings.pop("counting_threshold", own_defaults[detector][0])
        own_overlap = settings.pop("max_overlap", own_defaults[detector][1])
        self.detector_name = detector
        self.detector = (
            GroundingDetector(**settings) if detector == "grounding_dino" else Mask2FormerDetector(**settings)
        )
        self.clip = ClipJudge(**(clip or {}))
        self.threshold = threshold
        self.counting_threshold = own_counting if counting_threshold is None else counting_threshold
        self.max_objects = max_objects
        self.max_overlap = own_overlap if max_overlap is None else max_overlap
        self.position_threshold = position_threshold
        self.colors = tuple(colors)
        self.color_templates = tuple(color_templates)
        self._classifiers: dict[str, torch.Tensor] = {}

    def load_items(self) -> list[EvalItem]:
        return [
            EvalItem(key=f"{i:05d}", prompt=row["prompt"], category=row["tag"], index=i, meta=row)
            for i, row in enumerate(read_metadata(self.metadata_path))
        ]

    def prepare_item(self, root: Path, item: EvalItem) -> None:
        """GenEval's layout: the prompt's metadata line in ``<key>/metadata.jsonl``."""
        target = root / item.key / "metadata.jsonl"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(item.meta) + "\n", encoding="utf-8")

    def source_files(self) -> list[Path]:
        return [Path(self.metadata_path).expanduser()]

    def describe_judges(self) -> dict[str, Any]:
        from t2ir1.evaluate.provenance import describe

        return {
            "detector": {"name": self.detector_name, **describe(self.detector)},
            "clip": describe(self.clip),
            "thresholds": {
                "score": self.threshold,
                "counting": self.counting_threshold,
                "max_overlap": self.max_overlap,
            },
        }

    def setup(self, device: str = "cpu") -> None:
        self.detector.setup(device)
        self.clip.setup(device)

    def classifier(self, classname: str) -> torch.Tensor:
        if classname not in self._classifiers:
            templates = [t.replace("{obj}", classname) for t in self.color_templates]
            self._classifiers[classname] = self.clip.zero_shot_classifier(self.colors, templates)
        return self._classifiers[classname]

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        classes = []
        for entry in entries:
            meta = entry.item.meta
            names = [c["class"] for c in meta["include"]] + [c["class"] for c in meta.get("exclude") or []]
            classes.append(list(dict.fromkeys(names)))
        detections = self.detector.detect(classes, [e.image for e in entries])
        rows = []
        for entry, found in zip(entries, detections, strict=True):
            meta = entry.item.meta
            threshold = self.counting_threshold if meta["tag"] == "counting" else self.threshold
            objects = group_detections(found, threshold, self.max_objects, self.max_overlap)

            def colors_of(classname: str, objs: list[Detection], image=entry.image) -> list[str]:
                crops = [masked_crop(image, d.box, d.attributes.get("mask")) for d in objs]
                return [self.colors[i] for i in self.clip.classify(crops, self.classifier(classname))]

            correct, reasons = evaluate_metadata(meta, objects, colors_of, self.position_threshold)
            rows.append(
                {
                    "category": meta["tag"],
                    "score": float(correct),
                    "correct": correct,
                    "reason": "; ".join(reasons),
                    "detections": {
                        k: [[round(x, 2) for x in d.box] + [round(d.score, 4)] for d in v]
                        for k, v in objects.items()
                    },
                }
            )
        return rows
