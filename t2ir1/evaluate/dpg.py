"""DPG-Bench: its question CSV, the dependency rule and the official aggregation.

The benchmark (TencentQQGYLab/ELLA ``dpg_bench/``) ships one ``.txt`` prompt per item and
``dpg_bench.csv`` with columns item_id, proposition_id, dependency, category_broad,
category_detailed, question_natural_language. ``dependency`` is ``0`` (no parent) or a
comma-separated list of parent proposition ids. Each question is answered yes/no by a VQA
judge on each tile of the 2x2 grid; a question whose parent is answered "no" counts 0; a
prompt's score is the mean over its questions (and tiles); categories are the five broad ones.

This module holds the file reading and the scoring math only; the VQA judge and the harness
wiring are not part of it yet.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from t2ir1.evaluate.base import BenchmarkFileError

CSV_COLUMNS = ("item_id", "proposition_id", "dependency", "category_broad", "question_natural_language")
BROAD_CATEGORIES = ("global", "entity", "attribute", "relation", "other")


@dataclass(frozen=True)
class DPGQuestion:
    """One question of a DPG-Bench item."""

    # the prompt's file stem (``<item_id>.txt``)
    item_id: str
    # the question's id within its item
    proposition_id: int
    # parent proposition ids (empty when the CSV says 0)
    parents: tuple[int, ...]
    # one of BROAD_CATEGORIES
    category: str
    # the yes/no question asked of the judge
    question: str


def read_dpg_questions(csv_path: str | Path) -> dict[str, list[DPGQuestion]]:
    """Questions of ``dpg_bench.csv`` grouped by item_id, with errors naming file and line."""
    path = Path(csv_path)
    if not path.is_file():
        raise BenchmarkFileError(
            f"DPG-Bench question file {path} does not exist; set benchmark.csv_path to dpg_bench.csv"
        )
    out: dict[str, list[DPGQuestion]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkFileError(f"{path}: missing column(s) {missing}; expected {list(CSV_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                pid = int(row["proposition_id"])
                dep = str(row["dependency"]).strip()
                parents = tuple(int(p) for p in dep.split(",") if p.strip() and int(p) != 0)
            except ValueError as e:
                raise BenchmarkFileError(
                    f"{path}:{line}: proposition_id/dependency must be integers ({e})"
                ) from e
            category = str(row["category_broad"]).strip().lower()
            if category not in BROAD_CATEGORIES:
                raise BenchmarkFileError(
                    f"{path}:{line}: category_broad {category!r} is not one of {BROAD_CATEGORIES}"
                )
            item = str(row["item_id"]).strip()
            out[item].append(
                DPGQuestion(item, pid, parents, category, str(row["question_natural_language"]).strip())
            )
    for item, qs in out.items():
        ids = {q.proposition_id for q in qs}
        for q in qs:
            unknown = [p for p in q.parents if p not in ids]
            if unknown:
                raise BenchmarkFileError(
                    f"{path}: item {item} question {q.proposition_id} depends on unknown id(s) {unknown}"
                )
    return dict(out)


def apply_dependencies(questions: Sequence[DPGQuestion], answers: Mapping[int, float]) -> dict[int, float]:
    """Per-question scores of one image after the dependency rule: 0 when any parent scored 0.

    ``answers`` maps proposition_id -> raw judge score (1.0 yes, 0.0 no). As in the official
    ``compute_dpg_bench.py`` the rule looks at the parents' raw answers (one level).
    """
    out: dict[int, float] = {}
    for q in questions:
        if q.proposition_id not in answers:
            raise KeyError(f"no judge answer for item {q.item_id} question {q.proposition_id}")
        score = float(answers[q.proposition_id])
        if any(float(answers[p]) == 0.0 for p in q.parents):
            score = 0.0
        out[q.proposition_id] = score
    return out


def summarize_dpg(
    questions: Mapping[str, Sequence[DPGQuestion]], answers: Mapping[str, Sequence[Mapping[int, float]]]
) -> dict[str, float]:
    """Overall (mean of per-prompt scores) and the five broad category accuracies, in percent.

    ``answers[item_id]`` holds one answer map per tile image. A prompt's score is the mean over
    its tiles of the mean over its questions; a category's accuracy is the mean over all of its
    (question, tile) scores. Categories without questions are left out.
    """
    per_prompt: list[float] = []
    per_cat: dict[str, list[float]] = defaultdict(list)
    for item, qs in questions.items():
        if item not in answers or not answers[item]:
            raise KeyError(f"no judged images for DPG-Bench item {item}")
        tile_means = []
        for tile in answers[item]:
            scores = apply_dependencies(qs, tile)
            tile_means.append(sum(scores.values()) / len(scores))
            for q in qs:
                per_cat[q.category].append(scores[q.proposition_id])
        per_prompt.append(sum(tile_means) / len(tile_means))
    out = {"overall": 100.0 * sum(per_prompt) / len(per_prompt)}
    for c in BROAD_CATEGORIES:
        if per_cat[c]:
            out[c] = 100.0 * sum(per_cat[c]) / len(per_cat[c])
    return out
