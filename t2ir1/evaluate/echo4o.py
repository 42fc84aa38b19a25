"""GenEval++ and Imagine-Bench (Echo-4o, yejy53/Echo-4o ``test_scripts/``): VLM-judged benchmarks.

Both send the image and a text instruction to a chat judge (official: GPT-4.1 at temperature 0
through the OpenAI API; here any judge with the WISE interface: an OpenAI-compatible endpoint,
e.g. vLLM serving an open VLM, or a local transformers VLM).

**GenEval++** (``Geneval++.txt`` / ``Geneval++.jsonl``: 280 prompts, 7 tags x 40): each metadata
row (GenEval-style ``include`` clauses with class, count, color, region, size; optional ``exclude``)
becomes an expectation checklist; the judge answers a JSON object whose ``correct`` is 0 or 1.
Tag accuracy = fraction of correct images; overall = mean of the tag accuracies.

**Imagine-Bench** (``Imagine.txt`` / ``Imagine.jsonl``: 269 rows of id, instruction, note, type):
the judge scores Fantasy Fulfillment, Identity Preservation and Aesthetic Quality in 0..10; per
image ``0.8 * min(FF, IP) + 0.2 * AQ`` (0..10). The eight types are merged into the official four
groups (Attribute shift, Hybridization, Spatiotemporal, Multi-Object); overall = the weighted mean
of the group means with the official weights 3/2/2/2.

**Differences from the official scorers:** answers that cannot be read (no JSON ``correct`` /
a missing score) are counted in the notes and left out of the means (the official GenEval++ script
counts them as wrong, Imagine's as a negative score); the image is sent as PNG (official: JPEG
re-encoding); the official Imagine overall misspells the Multi-Object group's weight key, so its
overall leaves Multi-Object out -- ``reference_quirks: true`` reproduces that. The instructions are
t2ir1's wording of the official protocols (``system_prompt`` / ``instruction`` in the config: paste
the official texts to match them exactly). Any judge other than GPT-4.1 gives numbers on another scale.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2ir1.evaluate.base import Benchmark, BenchmarkFileError, EvalItem, ImageEntry, mean, read_jsonl
from t2ir1.evaluate.provenance import describe

log = logging.getLogger(__name__)

GENEVAL_PP_TAGS = (
    "color_attr",
    "color_count_attr",
    "color_spatial_attr",
    "counting",
    "multi_object_count_attr",
    "size_spatial_attr",
    "spatial_count_attr",
)
# Official merge of Imagine-Bench's eight types into four groups, and the groups' weights.
IMAGINE_GROUPS = {
    "COLOR": "Attribute shift",
    "SHAPE": "Attribute shift",
    "SIZE": "Attribute shift",
    "MATERIAL": "Hybridization",
    "COMBINATION": "Hybridization",
    "TIME": "Spatiotemporal",
    "ENVIRONMENT": "Spatiotemporal",
    "Multi-Object": "Multi-Object",
}
IMAGINE_WEIGHTS = {"Attribute shift": 3.0, "Hybridization": 2.0, "Spatiotemporal": 2.0, "Multi-Object": 2.0}
IMAGINE_FIELDS = {
    "fantasy fulfillment": "fantasy_fulfillment",
    "identity preservation": "identity_preservation",
    "aesthetic quality": "aesthetic_quality",
}


def check_prompt_list(txt_path: str | None, prompts: Sequence[str], jsonl_path: str) -> None:
    """The ``.txt`` prompt list, when given, must hold the JSONL's prompts in the same order."""
    if not txt_path:
        return
    path = Path(txt_path).expanduser()
    if not path.is_file():
        raise BenchmarkFileError(
            f"prompt list {path} does not exist (set it to null to use the JSONL's prompts)"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != len(prompts):
        raise BenchmarkFileError(f"{path}: {len(lines)} prompts but {jsonl_path} has {len(prompts)} rows")
    for number, (line, prompt) in enumerate(zip(lines, prompts, strict=True), start=1):
        if line != prompt.strip():
            raise BenchmarkFileError(
                f"{path}:{number}: {line!r} differs from {jsonl_path} row {number}: {prompt!r}"
            )


def _plural(name: str, count: int) -> str:
    return name + "s" if count > 1 else name


def geneval_pp_checklist(metadata: dict[str, Any]) -> str:
    """The expectation checklist of a GenEval++ metadata row (one line per include/exclude clause).

    ``{"class": "clock", "count": 3, "region": "left"}`` -> ``- 3 clocks located in the left part of the image.``;
    colour and size prefix the noun (``blue-colored large 1 cup``); ``exclude`` with count c says
    ``- No more than c-1 <class>s should appear.``
    """
    lines = []
    for clause in metadata.get("include", []):
        count = int(clause.get("count", 1))
        noun = f"{count} {_plural(clause['class'], count)}"
        prefix = [f"{clause['color']}-colored"] if clause.get("color") else []
        prefix += [clause["size"]] if clause.get("size") else []
        if prefix:
            noun = " ".join(prefix) + " " + noun
        where = (
            f"located in the {clause['region']} part of the image"
            if clause.get("region")
            else "present in the image"
        )
        lines.append(f"- {noun} {where}.")
    for clause in metadata.get("exclude", []) or []:
        count = int(clause.get("count", 1))
        lines.append(f"- No more than {count - 1} {_plural(clause['class'], count)} should appear.")
    return "This image should contain:\n" + "\n".join(lines)


_JSON_OBJECT = re.compile(r"\{[\s\S]*\}")


def parse_correct(answer: str) -> float | None:
    """``correct`` (0 or 1) of the judge's JSON answer (code fences allowed); None when unreadable."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", (answer or "").strip())
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        value = json.loads(match.group(0)).get("correct")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value)
    if isinstance(value, bool) or value not in (0, 1):
        return None
    return float(value)


_IMAGINE_SCORE = re.compile(
    r"(fantasy\s+fulfill?ment|identity\s+preservation|aesthetic\s+quality)\W{0,4}\s*[:：=\-]?\s*\**\s*(\d{1,2}(?:\.\d+)?)",
    re.IGNORECASE,
)


def parse_imagine(answer: str) -> dict[str, float] | None:
    """The three 0..10 scores of an Imagine-Bench answer (last mention wins); None when one is missing or > 10."""
    found: dict[str, float] = {}
    for name, value in _IMAGINE_SCORE.findall(answer or ""):
        key = IMAGINE_FIELDS[re.sub(r"\s+", " ", name.lower()).replace("fulfilment", "fulfillment")]
        found[key] = float(value)
    if set(found) != set(IMAGINE_FIELDS.values()) or any(v > 10 for v in found.values()):
        return None
    return found


def imagine_score(
    fantasy_fulfillment: float, identity_preservation: float, aesthetic_quality: float
) -> float:
    """``0.8 * min(FF, IP) + 0.2 * AQ`` on the judge's 0..10 scale."""
    return 0.8 * min(fantasy_fulfillment, identity_preservation) + 0.2 * aesthetic_quality


class _ChatJudged(Benchmark):
    """Shared plumbing: a chat judge, one image per prompt named ``<id>.png`` (``<id>_<k>.png`` for more)."""

    judge: Any
    system_prompt: str

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        suffix = "" if self.n_per_prompt == 1 else f"_{sample_index}"
        return root / f"{item.key}{suffix}.png"

    def setup(self, device: str = "cpu") -> None:
        self.judge.setup(device)

    def describe_judges(self) -> dict[str, Any]:
        return {"judge": describe(self.judge)}

    def ask(self, entries: Sequence[ImageEntry], instructions: Sequence[str]) -> list[str]:
        return self.judge(self.system_prompt, list(instructions), [e.image for e in entries])


class GenEvalPPBenchmark(_ChatJudged):
    """GenEval++ with a chat judge.

    Args:
        metadata: ``Geneval++.jsonl``.
        prompts: ``Geneval++.txt`` (checked against the JSONL) or null.
        judge: a built chat judge (``OpenAICompatibleJudge`` / ``LocalVlmJudge``).
        system_prompt: the judge's rules and answer format (JSON with ``correct``).
        instruction: the user text, with ``{prompt}`` and ``{checklist}``.
        n_per_prompt: images per prompt (official: 1, ``<id>.png`` with 1-based ids).
    """

    name = "geneval_pp"
    categories = GENEVAL_PP_TAGS

    def __init__(
        self,
        metadata: str,
        judge: Any,
        system_prompt: str,
        instruction: str,
        prompts: str | None = None,
        n_per_prompt: int = 1,
        name: str = "geneval_pp",
    ):
        self.name = name
        self.metadata_path = metadata
        self.prompts_path = prompts
        self.judge = judge
        self.system_prompt = system_prompt
        self.instruction = instruction
        self.n_per_prompt = n_per_prompt

    def load_items(self) -> list[EvalItem]:
        rows = read_jsonl(
            self.metadata_path,
            "GenEval++ metadata",
            "clone yejy53/Echo-4o and pass test_scripts/Geneval++.jsonl",
        )
        items = []
        for index, row in enumerate(rows):
            where = f"{self.metadata_path}:{row['_line']}"
            if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise BenchmarkFileError(f"{where}: 'prompt' must be a non-empty string")
            if not isinstance(row.get("tag"), str):
                raise BenchmarkFileError(f"{where}: 'tag' must be a string (one of {GENEVAL_PP_TAGS})")
            include = row.get("include")
            if (
                not isinstance(include, list)
                or not include
                or not all(isinstance(c, dict) and c.get("class") for c in include)
            ):
                raise BenchmarkFileError(
                    f"{where}: 'include' must be a non-empty list of {{class, count, ...}}"
                )
            meta = {k: v for k, v in row.items() if k != "_line"}
            items.append(
                EvalItem(
                    key=str(index + 1),
                    prompt=row["prompt"].strip(),
                    category=row["tag"],
                    index=index,
                    meta=meta,
                )
            )
        check_prompt_list(self.prompts_path, [i.prompt for i in items], self.metadata_path)
        return items

    def source_files(self) -> list[Path]:
        return [Path(p).expanduser() for p in (self.metadata_path, self.prompts_path) if p]

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        instructions = [
            self.instruction.replace("{prompt}", e.item.prompt).replace(
                "{checklist}", geneval_pp_checklist(e.item.meta)
            )
            for e in entries
        ]
        rows = []
        for entry, answer in zip(entries, self.ask(entries, instructions), strict=True):
            correct = parse_correct(answer)
            if correct is None:
                log.warning(
                    "geneval_pp: no JSON 'correct' in the answer for prompt %s: %r",
                    entry.item.key,
                    answer[:200],
                )
            rows.append(
                {
                    "category": entry.item.category,
                    "score": float("nan") if correct is None else correct,
                    "parsed": correct is not None,
                    "answer": answer,
                }
            )
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        summary = super().summarize(rows)
        summary["overall_rule"] = "mean of the tag accuracies"
        summary["notes"] = {"unparsed judge answers": sum(1 for r in rows if not r.get("parsed", True))}
        return summary


class ImagineBenchmark(_ChatJudged):
    """Imagine-Bench with a chat judge.

    Args:
        metadata: ``Imagine.jsonl`` (id, instruction, note, type).
        prompts: ``Imagine.txt`` (checked against the JSONL) or null.
        judge, system_prompt: the chat judge and its system line.
        instruction: the user text, with ``{prompt}`` and ``{explanation}`` (the row's note).
        groups: type -> group (official merge of the eight types into four).
        weights: group -> weight of the overall (official: 3/2/2/2).
        reference_quirks: reproduce the official overall, which leaves Multi-Object out.
        n_per_prompt: images per prompt (official: 1, ``<id>.png``).
    """

    name = "imagine"
    categories = tuple(IMAGINE_WEIGHTS)

    def __init__(
        self,
        metadata: str,
        judge: Any,
        system_prompt: str,
        instruction: str,
        prompts: str | None = None,
        groups: dict[str, str] | None = None,
        weights: dict[str, float] | None = None,
        reference_quirks: bool = False,
        n_per_prompt: int = 1,
        name: str = "imagine",
    ):
        self.name = name
        self.metadata_path = metadata
        self.prompts_path = prompts
        self.judge = judge
        self.system_prompt = system_prompt
        self.instruction = instruction
        self.groups = dict(groups or IMAGINE_GROUPS)
        self.weights = dict(weights or IMAGINE_WEIGHTS)
        unknown = sorted(set(self.groups.values()) - set(self.weights))
        if unknown:
            raise ValueError(f"imagine: groups {unknown} have no weight; weights name {sorted(self.weights)}")
        self.reference_quirks = reference_quirks
        self.n_per_prompt = n_per_prompt

    def load_items(self) -> list[EvalItem]:
        rows = read_jsonl(
            self.metadata_path, "Imagine-Bench", "clone yejy53/Echo-4o and pass test_scripts/Imagine.jsonl"
        )
        items, seen = [], {}
        for index, row in enumerate(rows):
            where = f"{self.metadata_path}:{row['_line']}"
            rid = row.get("id")
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise BenchmarkFileError(f"{where}: 'id' must be an integer, got {rid!r}")
            if rid in seen:
                raise BenchmarkFileError(f"{where}: id {rid} already used on line {seen[rid]}")
            seen[rid] = row["_line"]
            for key in ("instruction", "note", "type"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise BenchmarkFileError(f"{where}: '{key}' must be a non-empty string")
            if row["type"] not in self.groups:
                raise BenchmarkFileError(f"{where}: type {row['type']!r} is not one of {sorted(self.groups)}")
            meta = {k: v for k, v in row.items() if k != "_line"}
            items.append(
                EvalItem(
                    key=str(rid),
                    prompt=row["instruction"].strip(),
                    category=self.groups[row["type"]],
                    index=index,
                    meta=meta,
                )
            )
        check_prompt_list(self.prompts_path, [i.prompt for i in items], self.metadata_path)
        return items

    def source_files(self) -> list[Path]:
        return [Path(p).expanduser() for p in (self.metadata_path, self.prompts_path) if p]

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        instructions = [
            self.instruction.replace("{prompt}", e.item.prompt).replace("{explanation}", e.item.meta["note"])
            for e in entries
        ]
        rows = []
        for entry, answer in zip(entries, self.ask(entries, instructions), strict=True):
            parsed = parse_imagine(answer)
            row: dict[str, Any] = {
                "category": entry.item.category,
                "type": entry.item.meta["type"],
                "parsed": parsed is not None,
                "answer": answer,
            }
            if parsed is None:
                log.warning(
                    "imagine: could not read three 0-10 scores for id %s from %r",
                    entry.item.key,
                    answer[:200],
                )
                row["score"] = float("nan")
            else:
                row.update(parsed)
                row["score"] = imagine_score(**parsed)
            rows.append(row)
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        by_group: dict[str, list[float]] = defaultdict(list)
        by_type: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            by_group[row["category"]].append(float(row["score"]))
            by_type[row["type"]].append(float(row["score"]))
        categories = {
            g: {"score": mean(by_group[g]), "n": len(by_group[g])} for g in self.ordered_categories(rows)
        }
        weights = {
            g: w for g, w in self.weights.items() if not (self.reference_quirks and g == "Multi-Object")
        }
        present = {
            g: c["score"] for g, c in categories.items() if g in weights and not math.isnan(c["score"])
        }
        used = sum(weights[g] for g in present)
        overall = sum(weights[g] * s for g, s in present.items()) / used if used else float("nan")
        rule = (
            "weighted mean of the group means (" + ", ".join(f"{g} {w:g}" for g, w in weights.items()) + ")"
        )
        return {
            "categories": categories,
            "overall": overall,
            "overall_rule": rule
            + ("" if set(present) == set(weights) else ", renormalised over the groups present"),
            "notes": {
                "unparsed judge answers": sum(1 for r in rows if not r.get("parsed", True)),
                "scale": "0-10",
                "per type": {t: round(mean(v), 4) for t, v in sorted(by_type.items())},
            },
        }
