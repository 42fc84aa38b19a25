"""DPG-Bench: its question CSV, the dependency rule and the official aggregation.

The benchmark (TencentQQGYLab/ELLA ``dpg_bench/``) ships one ``.txt`` prompt per item and
``dpg_bench.csv`` with columns item_id, proposition_id, dependency, category_broad,
category_detailed, question_natural_language. ``dependency`` is ``0`` (no parent) or a
comma-separated list of parent proposition ids. Each question is answered yes/no by a VQA
judge on each tile of the 2x2 grid; a question whose parent is answered "no" counts 0; a
prompt's score is the mean over its questions (and tiles); categories are the five broad ones.

Layout: singles ``<out>/singles/<item_id>_<k>.png`` (what the harness scores, k = tile index in
row-major order) and the official 2x2 grid ``<out>/grids/<item_id>.png`` (what the official
``compute_dpg_bench.py`` reads; a folder holding only grids is cut back into singles).

**Differences from the official scorer:** the official judge is mPLUG-large through
modelscope's pipeline, whose multi-modal extra resolves here only by downgrading protobuf,
pytorch-lightning, huggingface_hub and transformers (it would break training); t2ir1 asks a transformers judge -- BLIP VQA (``benchmark/judge=blip_vqa``,
yes when P(yes) > P(no)) or any chat VLM (``local_vlm`` / ``openai``, yes when the answer's first
word is "yes"). Numbers from another judge are on another scale: compare runs with one judge.
The tiles are scored as the singles they were cut from (identical pixels).
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2ir1.evaluate.base import BenchmarkFileError, EvalItem, ImageEntry
from t2ir1.evaluate.grid import GridBenchmark
from t2ir1.evaluate.provenance import describe
from t2ir1.evaluate.vqa import DEFAULT_QUESTION_TEMPLATE, as_yes_no

log = logging.getLogger(__name__)

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


def read_dpg_prompts(prompts_dir: str | Path, item_ids: Sequence[str]) -> dict[str, str]:
    """``{item_id: prompt}`` from ``<prompts_dir>/<item_id>.txt`` (stripped); errors name the file."""
    folder = Path(prompts_dir).expanduser()
    if not folder.is_dir():
        raise BenchmarkFileError(
            f"DPG-Bench prompt folder {folder} does not exist; set benchmark.prompts_dir to "
            "<TencentQQGYLab/ELLA clone>/dpg_bench/prompts"
        )
    prompts = {}
    for item in item_ids:
        path = folder / f"{item}.txt"
        if not path.is_file():
            raise BenchmarkFileError(
                f"{path}: prompt of DPG-Bench item {item} (it has questions in the CSV) is missing"
            )
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise BenchmarkFileError(f"{path}: empty prompt")
        prompts[item] = text
    return prompts


class DPGBenchmark(GridBenchmark):
    """DPG-Bench: dense prompts, 2x2 grids, DSG-style yes/no questions with dependencies.

    Args:
        prompts_dir: the folder of ``<item_id>.txt`` prompts (``dpg_bench/prompts``).
        csv_path: ``dpg_bench.csv``.
        judge: a built yes/no judge (:class:`~t2ir1.evaluate.vqa.BlipYesNoJudge`) or a chat judge
            (``LocalVlmJudge`` / ``OpenAICompatibleJudge``), wrapped with ``question_template``.
        question_template: the chat judge's instruction (``{question}``).
        n_per_prompt: images per prompt (official: 4, tiled 2x2).
    """

    name = "dpg"
    categories = BROAD_CATEGORIES

    def __init__(
        self,
        prompts_dir: str,
        csv_path: str,
        judge: Any,
        question_template: str = DEFAULT_QUESTION_TEMPLATE,
        n_per_prompt: int = 4,
        name: str = "dpg",
    ):
        if n_per_prompt != self.grid_rows * self.grid_cols:
            raise ValueError(
                f"dpg: n_per_prompt must be {self.grid_rows * self.grid_cols} (a 2x2 grid), got {n_per_prompt}"
            )
        self.name = name
        self.prompts_dir = prompts_dir
        self.csv_path = csv_path
        self.judge = as_yes_no(judge, question_template)
        self.n_per_prompt = n_per_prompt
        self.questions: dict[str, list[DPGQuestion]] = {}

    def load_items(self) -> list[EvalItem]:
        self.questions = read_dpg_questions(self.csv_path)
        ids = sorted(self.questions)
        prompts = read_dpg_prompts(self.prompts_dir, ids)
        return [
            EvalItem(key=item, prompt=prompts[item], category="dpg", index=i) for i, item in enumerate(ids)
        ]

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        return root / "singles" / f"{item.key}_{sample_index}.png"

    def source_files(self) -> list[Path]:
        return [Path(self.csv_path).expanduser(), Path(self.prompts_dir).expanduser()]

    def describe_judges(self) -> dict[str, Any]:
        return {"vqa": describe(self.judge)}

    def setup(self, device: str = "cpu") -> None:
        self.judge.setup(device)

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        if not self.questions:
            self.questions = read_dpg_questions(self.csv_path)
        pairs = [(e, q) for e in entries for q in self.questions[e.item.key]]
        answers = self.judge.answer_yes_no([e.image for e, _ in pairs], [q.question for _, q in pairs])
        rows = []
        cursor = 0
        for entry in entries:
            questions = self.questions[entry.item.key]
            mine = answers[cursor : cursor + len(questions)]
            cursor += len(questions)
            raw = {q.proposition_id: value for q, (value, _) in zip(questions, mine, strict=True)}
            scored = apply_dependencies(questions, raw)
            rows.append(
                {
                    "category": "dpg",
                    "score": sum(scored.values()) / len(scored),
                    "answers": {str(q.proposition_id): raw[q.proposition_id] for q in questions},
                    "judge_outputs": [text for _, text in mine],
                }
            )
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not self.questions:
            self.questions = read_dpg_questions(self.csv_path)
        answers: dict[str, list[dict[int, float]]] = defaultdict(list)
        for row in rows:
            answers[row["key"]].append({int(k): float(v) for k, v in row["answers"].items()})
        judged = {item: self.questions[item] for item in answers}
        partial = sorted(item for item, tiles in answers.items() if len(tiles) != self.n_per_prompt)
        out = summarize_dpg(judged, answers) if judged else {"overall": float("nan")}
        counts: dict[str, int] = defaultdict(int)
        for item, tiles in answers.items():
            for q in judged[item]:
                counts[q.category] += len(tiles)
        categories = {c: {"score": out[c], "n": counts[c]} for c in BROAD_CATEGORIES if c in out}
        notes: dict[str, Any] = {"prompts judged": len(judged), "scale": "percent"}
        if partial:
            notes["prompts with fewer than 4 tiles"] = len(partial)
        return {
            "categories": categories,
            "overall": out["overall"],
            "overall_rule": "mean over prompts of the mean question accuracy over the 4 tiles (dependency rule applied)",
            "notes": notes,
        }
