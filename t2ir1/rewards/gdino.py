"""GroundingDINO reward (REFERENCE §3, ``gdino``): detect the prompt's nouns, then apply the rules.

Caption ``" . ".join(nouns) + "."``. Each noun's character spans (one per word)
select text tokens through the fast tokenizer's offsets; the positive map row of a noun spreads 1 evenly over those
tokens, so the phrase logit ``= positive_map @ sigmoid(logits)`` is the mean token
probability. A (box, noun) pair is kept when its phrase logit exceeds
``box_threshold`` (0.3). The kept detections are scored by
:func:`t2ir1.rewards.compositional.compositional_score` (object / spatial /
numeracy rules, NMS at 0.5 for counts).

``reference_quirks: true`` reproduces every bug of the original's reward
(REFERENCE §3): a multi-word noun is grounded on its first and last word and
labelled with those two words joined, so a noun of 3+ words never matches its own
label and is never detected; and the rule bugs of
:mod:`t2ir1.rewards.compositional` (normalised boxes against the 150 px near
threshold, no ``above`` / ``on top of`` branch, counting NMS on ``(cx, cy, w, h)``
boxes, dispatch by ``task_type`` alone, ``obj1 == obj2`` scored 0). The original
runs the detector in fp32 (``dtype: float32``); bf16 flips detections near the
0.3 threshold.

Images of one micro-batch are grouped by size so that no image is padded (the
detector's output would depend on the padding); generated images share one size,
so training runs one forward per micro-batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards._common import (
    check_inputs,
)
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.compositional import Detection, compositional_score
from t2ir1.rewards.frozen import FrozenModel

log = logging.getLogger(__name__)


def noun_spans(
    nouns: Sequence[str], first_and_last_word: bool = False, separator: str = " . ", terminator: str = "."
) -> tuple[str, list[list[tuple[int, int]]]]:
    """The caption and, per noun, the character spans of its words.

    ``first_and_last_word`` keeps only the first and last word of a multi-word noun,
    as the original does (its ``make_detection_prompt``).

    >>> noun_spans(["cat", "big red car"])
    ('cat . big red car.', [[(0, 3)], [(6, 9), (10, 13), (14, 17)]])
    >>> noun_spans(["cat", "big red car"], first_and_last_word=True)[1]
    [[(0, 3)], [(6, 9), (14, 17)]]
    """
    caption_parts: list[str] = []
    spans: list[list[tuple[int, int]]] = []
    position = 0
    for index, noun in enumerate(nouns):
        if index:
            caption_parts.append(separator)
            position += len(separator)
        words = noun.split()
        word_spans: list[tuple[int, int]] = []
        cursor = 0
        for word in words:
            start = noun.index(word, cursor)
            word_spans.append((position + start, position + start + len(word)))
            cursor = start + len(word)
        keep_ends = first_and_last_word and len(word_spans) > 1
        spans.append([word_spans[0], word_spans[-1]] if keep_ends else word_spans)
        caption_parts.append(noun)
        position += len(noun)
    caption_parts.append(terminator)
    return "".join(caption_parts), spans


def detection_label(noun: str, first_and_last_word: bool = False) -> str:
    """The label a detection of ``noun`` carries: the noun, or (original) its first and last word.

    The original labels a detection with the caption text of its spans joined by a
    space, so ``"red traffic light"`` becomes ``"red light"`` and never equals the noun.
    """
    words = noun.split()
    return " ".join([words[0], words[-1]]) if first_and_last_word and len(words) > 1 else noun


def positive_map(spans: list[list[tuple[int, int]]], offsets: torch.Tensor, length: int) -> torch.Tensor:
    """``[num_nouns, length]`` float: row n spreads 1 evenly over the tokens overlapping noun n's spans.

    ``offsets`` is ``[T, 2]`` (character start, end) per token; special tokens have ``(0, 0)``.
    """
    result = torch.zeros(len(spans), length)
    starts, ends = offsets[:length, 0], offsets[:length, 1]  # [T]
    is_text = ends > starts  # [T]
    for row, noun_span_list in enumerate(spans):
        for start, end in noun_span_list:
            overlap = is_text & (starts < end) & (ends > start)  # [T]
            result[row, : len(overlap)][overlap] = 1.0
    return result / result.sum(dim=1, keepdim=True).clamp(min=1e-6)


class GroundingDinoReward(FrozenModel):
    """Compositional score from GroundingDINO detections; ``[B]`` float32 in ``[0, 1]``.

    Args:
        model_path: hub id or local folder with ``GroundingDinoForObjectDetection`` + processor.
        box_threshold: keep a (box, noun) pair when its phrase logit exceeds this.
        iou_threshold, near_threshold, detected_weight, nms_iou, partial_weight: rule constants
            (see :mod:`t2ir1.rewards.compositional`).
        reference_quirks: reproduce the original's bugs (first + last word of multi-word nouns, and
            the rule bugs of :mod:`t2ir1.rewards.compositional`).
        dtype, micro_batch_size, local_files_only: loading knobs (the original: ``float32``).
    """

    def __init__(
        self,
        model_path: str = "IDEA-Research/grounding-dino-tiny",
        box_threshold: float = 0.3,
        iou_threshold: float = 0.1,
        near_threshold: float = 150.0,
        detected_weight: float = 0.2,
        nms_iou: float = 0.5,
        partial_weight: float = 0.2,
        reference_quirks: bool = False,
        dtype: str = "auto",
        micro_batch_size: int = 16,
        local_files_only: bool = False,
        name: str = "gdino",
    ) -> None:
        super().__init__(name, model_path, dtype, micro_batch_size, local_files_only)
        self.box_threshold = box_threshold
        self.rule_kwargs = {
            "iou_threshold": iou_threshold,
            "near_threshold": near_threshold,
            "detected_weight": detected_weight,
            "nms_iou": nms_iou,
            "partial_weight": partial_weight,
            "reference_quirks": reference_quirks,
        }
        self.reference_quirks = reference_quirks

    model_class = "GroundingDinoForObjectDetection"

    def on_load(self) -> None:
        """The processor needs a fast tokenizer (character offsets of the phrases)."""
        if not getattr(self.processor.tokenizer, "is_fast", False):
            raise ValueError(
                f"{self.name}: {self.model_path} has no fast tokenizer; character offsets need one"
            )

    @torch.inference_mode()
    def detect(
        self, nouns_per_image: Sequence[Sequence[str]], images: Sequence[Image.Image]
    ) -> list[list[Detection]]:
        """Detections (pixel boxes) of each image's nouns; all images must share one size."""
        quirks = self.reference_quirks
        captions, spans = zip(
            *(noun_spans(nouns, first_and_last_word=quirks) for nouns in nouns_per_image), strict=True
        )
        text = self.processor.tokenizer(
            list(captions), padding="longest", return_offsets_mapping=True, return_tensors="pt"
        )
        max_len = self.model.config.max_text_len
        pixels = self.processor.image_processor([img.convert("RGB") for img in images], return_tensors="pt")
        outputs = self.model(
            pixel_values=pixels["pixel_values"].to(self.device, self.dtype),
            pixel_mask=pixels["pixel_mask"].to(self.device) if "pixel_mask" in pixels else None,
            input_ids=text["input_ids"][:, :max_len].to(self.device),
            attention_mask=text["attention_mask"][:, :max_len].to(self.device),
            token_type_ids=text["token_type_ids"][:, :max_len].to(self.device)
            if "token_type_ids" in text
            else None,
        )
        length = min(text["input_ids"].shape[1], max_len)
        probs = outputs.logits[..., :length].float().sigmoid()  # [b, Q, T]
        boxes = outputs.pred_boxes.float()  # [b, Q, 4] (cx, cy, w, h) normalised
        corners = torch.cat(
            [boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1
        )
        results: list[list[Detection]] = []
        for row, (nouns, image) in enumerate(zip(nouns_per_image, images, strict=True)):
            pos_map = positive_map(spans[row], text["offset_mapping"][row], length).to(probs.device)  # [n, T]
            phrase_logits = probs[row] @ pos_map.T  # [Q, n]
            width, height = image.size
            scale = torch.tensor([width, height, width, height], device=corners.device)
            pixel_boxes = (corners[row] * scale).cpu()  # [Q, 4]
            kept = (phrase_logits > self.box_threshold).nonzero().cpu().tolist()  # [(query, noun)]
            scores = phrase_logits.cpu()
            labels = [detection_label(noun, first_and_last_word=quirks) for noun in nouns]
            results.append(
                [Detection(labels[n], tuple(pixel_boxes[q].tolist()), float(scores[q, n])) for q, n in kept]
            )
        return results

    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]``; returns ``[B]`` float32 on CPU."""
        self.ready()
        check_inputs(self.name, records, images)
        scores = torch.ones(len(records), dtype=torch.float32)
        detections: dict[int, list[Detection]] = {}
        with_nouns = [i for i, r in enumerate(records) if r.nouns]
        for chunk in self.chunks(len(with_nouns)):
            by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
            for i in with_nouns[chunk]:
                by_size[images[i].size].append(i)
            for rows in by_size.values():
                found = self.detect([records[i].nouns for i in rows], [images[i] for i in rows])
                detections.update(zip(rows, found, strict=True))
        for i, found in detections.items():
            scores[i] = compositional_score(
                records[i], found, image_size=images[i].size, box_format="pixel", **self.rule_kwargs
            )
        counts = torch.tensor([len(detections.get(i, ())) for i in range(len(records))])
        return RewardOutput(self.name, scores, {"num_detections": counts})
