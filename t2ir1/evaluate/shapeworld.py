"""ShapeWorld-Bench: the held-out ShapeWorld prompts, scored by the exact detector.

Items are, by default, the demo's held-out records (:func:`t2ir1.shapeworld.prompts.heldout_records`,
960 records cycling through the held-out texts, one image each, seeded per record exactly as
the demo's :class:`~t2ir1.shapeworld.callbacks.HeldoutAccuracyCallback` seeds them: with the
same seed and settings both draw the same images and report the same table). With
``num_records: null`` the items are the distinct held-out texts
(:func:`t2ir1.shapeworld.prompts.heldout_texts`), ``n_per_prompt`` images each. Categories:
object, two_object, counting, colors, position, color_attr -- none of them is ever a
training prompt. Each image is detected by the programmatic
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
from t2ir1.rollout.sampling import record_seed
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import CATEGORIES, HELDOUT_SEED, HELDOUT_SIZE, heldout_records, heldout_texts
from t2ir1.shapeworld.reward import is_correct
from t2ir1.shapeworld.world import WORLD


class ShapeWorldBenchmark(Benchmark):
    """Held-out ShapeWorld accuracy.

    Args:
        n_per_prompt: images per prompt (1 with ``num_records``; GenEval-like 4 over distinct texts).
        heldout_seed, heldout_size: which held-out set (the training stream excludes the same one).
        num_records: evaluate the demo's held-out records (one image each, per-record seeds);
            ``None``: the distinct held-out texts, ``n_per_prompt`` images each.
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
        num_records: int | None = None,
    ):
        if num_records is not None and (num_records < 1 or n_per_prompt != 1):
            raise ValueError(
                f"benchmark.num_records={num_records} with n_per_prompt={n_per_prompt}: held-out records are "
                "drawn once each (num_records >= 1, n_per_prompt=1); set benchmark.num_records=null to draw "
                "n_per_prompt images of each distinct held-out text instead"
            )
        self.num_records = num_records
        self.name = name
        self.n_per_prompt = n_per_prompt
        self.heldout_seed = heldout_seed
        self.heldout_size = heldout_size
        self.detector = ShapeDetector(
            WORLD, color_threshold=color_threshold, min_area=min_area, min_score=min_score
        )

    def load_items(self) -> list[EvalItem]:
        if self.num_records is not None:
            records = heldout_records(self.num_records, self.heldout_seed)
        else:
            texts = heldout_texts(self.heldout_seed, self.heldout_size)
            records = [record for category in CATEGORIES for record in texts[category]]
        return [
            EvalItem(key=f"{i:05d}", prompt=r.prompt, category=r.task_type, index=i, meta={"record": r})
            for i, r in enumerate(records)
        ]

    def item_seeds(self, items: Sequence[EvalItem], seed: int) -> list[int]:
        if self.num_records is None:
            return super().item_seeds(items, seed)
        # as the demo's held-out callback seeds its records (t2ir1.shapeworld.callbacks.generate)
        return [record_seed(seed, item.meta["record"].prompt_id or item.prompt) for item in items]

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
