"""ShapeWorld-Bench: the held-out ShapeWorld prompts, scored by the exact detector.

Items are the distinct held-out prompt texts (:func:`t2ir1.shapeworld.prompts.heldout_texts`:
categories object, two_object, counting, colors, position, color_attr -- none of them is
ever a training prompt). Each image is detected by the programmatic
:class:`~t2ir1.shapeworld.detector.ShapeDetector` and judged by
:func:`~t2ir1.shapeworld.reward.is_correct` (exact counts, required colours, the relation);
a category scores its fraction of correct images, overall = mean over categories
(GenEval's table). The detector is exact arithmetic on pixels, so there is no substitute
judge and nothing differs from an "official" scorer: this benchmark is t2ir1's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from t2ir1.evaluate.base import Benchmark, EvalItem, ImageEntry
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import CATEGORIES, HELDOUT_SEED, HELDOUT_SIZE, heldout_texts
from t2ir1.shapeworld.reward import is_correct
from t2ir1.shapeworld.world import WORLD


class ShapeWorldBenchmark(Benchmark):
    """Held-out ShapeWorld accuracy.

    Args:
        n_per_prompt: images per prompt (GenEval-like: 4).
        heldout_seed, heldout_size: which held-out set (the training stream excludes the same one).
        color_threshold, min_area, min_score: detector settings (as the ShapeWorld reward's).
    """

    name = "shapeworld"
    categories = CATEGORIES

    def __init__(
        self,
        n_per_prompt: int = 4,
        heldout_seed: int = HELDOUT_SEED,
        heldout_size: int = HELDOUT_SIZE,
        color_threshold: float = 60.0,
        min_area: int = 16,
        min_score: float = 0.5,
        name: str = "shapeworld",
    ):
        self.name = name
        self.n_per_prompt = n_per_prompt
        self.heldout_seed = heldout_seed
        self.heldout_size = heldout_size
        self.detector = ShapeDetector(
            WORLD, color_threshold=color_threshold, min_area=min_area, min_score=min_score
        )

    def load_items(self) -> list[EvalItem]:
        texts = heldout_texts(self.heldout_seed, self.heldout_size)
        records = [record for category in CATEGORIES for record in texts[category]]
        return [
            EvalItem(key=f"{i:05d}", prompt=r.prompt, category=r.task_type, index=i, meta={"record": r})
            for i, r in enumerate(records)
        ]

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        detections = self.detector.detect([e.image for e in entries])
        rows = []
        for entry, found in zip(entries, detections, strict=True):
            correct = is_correct(entry.item.meta["record"], found, WORLD)
            rows.append(
                {
                    "category": entry.item.category,
                    "score": float(correct),
                    "correct": correct,
                    "detected": [f"{d.attributes.get('color')} {d.label}" for d in found],
                }
            )
        return rows
