"""What every benchmark harness provides: its prompts, its image naming, its scorer, its table.

A benchmark is a plain object (built by Hydra from ``conf/benchmark/<name>.yaml``) with:

* ``load_items()`` -- the prompts, read from the user-given path (the benchmarks' own files
  are not shipped), validated with errors that name the file and line;
* ``image_path(root, item, sample_index)`` -- the benchmark's own naming, so that the
  official scorer can read the same folder;
* ``prepare_item(root, item)`` -- files the official layout needs beside the images;
* ``finalize_item(root, item)`` -- files made from an item's images once they exist (grids);
* ``source_files()`` / ``describe_judges()`` -- what ``results.json`` records as provenance;
* ``setup(device)`` / ``score(entries)`` -- load the judges once, then score a batch of
  images (one JSON-able row per image with at least ``score`` and ``category``);
* ``summarize(rows)`` -- the per-category table and the benchmark's overall number.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


class BenchmarkFileError(ValueError):
    """A benchmark prompt/metadata file that is missing or malformed (the message names file and line)."""


@dataclass(frozen=True)
class EvalItem:
    """One prompt of a benchmark."""

    # stable identifier (folder name, prompt_id), unique within the benchmark
    key: str
    # the text the model is asked to draw
    prompt: str
    # the category (GenEval tag, T2I-CompBench category, WISE category ...) it is tabled under
    category: str
    # 0-based position in the benchmark's prompt list (image numbering uses it)
    index: int = 0
    # benchmark-specific metadata (GenEval include/exclude, WISE explanation ...)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class ImageEntry:
    """One image to score: which item and sample it is, where it lies, and the image itself."""

    item: EvalItem
    sample_index: int
    path: Path
    image: Image.Image


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean ignoring NaN; NaN when nothing is left."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


class Benchmark:
    """Defaults shared by the harnesses; subclasses set ``name``, ``categories`` and implement the rest."""

    name: str = "benchmark"
    # table order of the categories (others found in the rows are appended)
    categories: tuple[str, ...] = ()
    # images per prompt the benchmark prescribes
    n_per_prompt: int = 1
    # score all images of an item in one ``score`` call (per-prompt measures such as diversity)
    group_by_item: bool = False

    def load_items(self) -> list[EvalItem]:
        raise NotImplementedError

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        """Default layout (GenEval's): ``root/<key>/samples/<sample:04d>.png``."""
        return root / item.key / "samples" / f"{sample_index:04d}.png"

    def item_seeds(self, items: Sequence[EvalItem], seed: int) -> list[int]:
        """Sampling seed of each item's images: by default the run seed and the prompt text only
        (:func:`~t2ir1.rollout.sampling.generation_seed`), as ``generate.py`` seeds them."""
        from t2ir1.rollout.sampling import generation_seed

        return [generation_seed(seed, item.prompt) for item in items]

    def prepare_item(self, root: Path, item: EvalItem) -> None:
        """Write what the official layout needs beside an item's images (default: nothing)."""

    def finalize_item(self, root: Path, item: EvalItem) -> None:
        """Write what is made from an item's images once they exist (default: nothing)."""

    def source_files(self) -> list[Path]:
        """The benchmark files its items come from (hashed into ``results.json``)."""
        return []

    def describe_judges(self) -> dict[str, Any]:
        """Identity of every judge model (id or path, revision or hash, endpoint model)."""
        return {}

    def setup(self, device: str = "cpu") -> None:
        """Load the judges (default: nothing to load)."""

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def ordered_categories(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        seen = list(self.categories)
        for row in rows:
            if row["category"] not in seen:
                seen.append(row["category"])
        return [c for c in seen if any(r["category"] == c for r in rows)]

    def category_means(self, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """``{category: {"score": mean of its rows' scores, "n": rows}}`` in the benchmark's order."""
        by_category: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            by_category[row["category"]].append(float(row["score"]))
        return {
            name: {"score": mean(by_category[name]), "n": len(by_category[name])}
            for name in self.ordered_categories(rows)
        }

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Per-category mean of ``score`` and the overall mean over categories (GenEval's rule)."""
        categories = self.category_means(rows)
        overall = mean([c["score"] for c in categories.values()])
        return {"categories": categories, "overall": overall, "overall_rule": "mean over categories"}


def read_jsonl(path: str | Path, what: str, hint: str) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (blank lines skipped); errors name the file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkFileError(f"{what} file {path} does not exist; {hint}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkFileError(
                f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})"
            ) from err
        if not isinstance(row, dict):
            raise BenchmarkFileError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append({**row, "_line": number})
    if not rows:
        raise BenchmarkFileError(f"{path}: no rows")
    return rows
