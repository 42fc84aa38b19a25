"""The one record type that flows from data to rewards: a prompt and its metadata.

Fields follow the T2I-R1 training file (REFERENCE §4): ``prompt``, ``task_type``,
``nouns`` always; ``spatial_info`` = {obj1, obj2, locality}; ``numeracy_info`` =
[{obj_name, num}]; ``attr_nouns`` = [str]. ``prompt_id`` is a stable identifier used
for per-prompt seeding and naming; ``extras`` carries world-specific metadata
(e.g. a ShapeWorld scene) that the compositional fields cannot express.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

# Task types of the T2I-R1 file plus the compositional categories generated offline.
TASK_TYPES = (
    "object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
    "spatial",
    "numeracy",
    "color",
    "shape",
    "texture",
    "complex",
    "non",
)

# Localities the rules module understands (REFERENCE §3).
LOCALITIES = (
    "left of",
    "on the left of",
    "right of",
    "on the right of",
    "below",
    "on the bottom of",
    "above",
    "on the top of",
    "on top of",
    "next to",
    "near",
    "on side of",
)


class RecordError(ValueError):
    """A prompt record that does not have the shape t2ir1 needs."""


@dataclass(frozen=True)
class SpatialInfo:
    obj1: str
    obj2: str
    locality: str


@dataclass(frozen=True)
class NumeracyItem:
    obj_name: str
    num: int


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    task_type: str
    nouns: tuple[str, ...] = ()
    spatial_info: SpatialInfo | None = None
    numeracy_info: tuple[NumeracyItem, ...] = ()
    attr_nouns: tuple[str, ...] = ()
    prompt_id: str = ""
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # where the row was read (``file.jsonl:12``), for error messages; not part of the record's identity
    origin: str = field(default="", compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form (the T2I-R1 file's field names), omitting empty optional fields."""
        row: dict[str, Any] = {"prompt": self.prompt, "task_type": self.task_type, "nouns": list(self.nouns)}
        if self.spatial_info is not None:
            row["spatial_info"] = asdict(self.spatial_info)
        if self.numeracy_info:
            row["numeracy_info"] = [asdict(item) for item in self.numeracy_info]
        if self.attr_nouns:
            row["attr_nouns"] = list(self.attr_nouns)
        if self.prompt_id:
            row["prompt_id"] = self.prompt_id
        if self.extras:
            row["extras"] = self.extras
        return row

    @classmethod
    def from_dict(cls, row: Any, where: str = "record") -> PromptRecord:
        """Validate one row and build a record; errors name ``where`` (e.g. ``file.jsonl:12``)."""

        def fail(message: str) -> RecordError:
            return RecordError(f"{where}: {message}")

        if not isinstance(row, dict):
            raise fail(f"expected a JSON object, got {type(row).__name__}")
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise fail("field 'prompt' must be a non-empty string")
        task_type = row.get("task_type")
        if task_type not in TASK_TYPES:
            raise fail(f"field 'task_type' is {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
        nouns = row.get("nouns", [])
        if not isinstance(nouns, list) or not all(isinstance(n, str) and n.strip() for n in nouns):
            raise fail("field 'nouns' must be a list of non-empty strings")

        spatial_info = None
        if row.get("spatial_info") is not None:
            raw = row["spatial_info"]
            if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("obj1", "obj2", "locality")):
                raise fail("field 'spatial_info' must be an object with string fields obj1, obj2, locality")
            if raw["locality"] not in LOCALITIES:
                raise fail(f"spatial_info.locality {raw['locality']!r} is unknown; expected one of {', '.join(LOCALITIES)}")
            spatial_info = SpatialInfo(raw["obj1"], raw["obj2"], raw["locality"])

        numeracy: list[NumeracyItem] = []
        raw_numeracy = row.get("numeracy_info") or []
        if not isinstance(raw_numeracy, list):
            raise fail("field 'numeracy_info' must be a list of {obj_name, num}")
        for index, item in enumerate(raw_numeracy):
            ok = (
                isinstance(item, dict)
                and isinstance(item.get("obj_name"), str)
                and isinstance(item.get("num"), int)
                and not isinstance(item.get("num"), bool)
                and item["num"] >= 0
            )
            if not ok:
                raise fail(f"numeracy_info[{index}] must be {{'obj_name': str, 'num': int >= 0}}, got {item!r}")
            numeracy.append(NumeracyItem(item["obj_name"], item["num"]))

        attr_nouns = row.get("attr_nouns") or []
        if not isinstance(attr_nouns, list) or not all(isinstance(a, str) for a in attr_nouns):
            raise fail("field 'attr_nouns' must be a list of strings")
        extras = row.get("extras") or {}
        if not isinstance(extras, dict):
            raise fail("field 'extras' must be an object")
        prompt_id = row.get("prompt_id", "")
        return cls(
            prompt=prompt,
            task_type=task_type,
            nouns=tuple(nouns),
            spatial_info=spatial_info,
            numeracy_info=tuple(numeracy),
            attr_nouns=tuple(attr_nouns),
            prompt_id=str(prompt_id),
            extras=extras,
            origin="" if where == "record" else where,
        )


# What happens to a prompt longer than data.max_prompt_tokens.
LONG_PROMPT_RULES = ("error", "truncate", "drop")


def limit_prompt_tokens(
    records: Sequence[PromptRecord],
    max_tokens: int | None,
    tokenize: Callable[[str], list[int]],
    detokenize: Callable[[list[int]], str] | None = None,
    rule: str = "error",
) -> list[PromptRecord]:
    """Apply the ``data.max_prompt_tokens`` rule once, at load time.

    A prompt of more than ``max_tokens`` tokens (``tokenize``: the policy's tokenizer, no
    special tokens) is refused (``error``: one message naming its file and line, or its
    prompt id), cut to its first ``max_tokens`` tokens (``truncate``; metadata unchanged), or
    left out (``drop``). ``max_tokens=None`` keeps every prompt.
    """
    if rule not in LONG_PROMPT_RULES:
        raise ValueError(f"data.long_prompts={rule!r}: must be one of {list(LONG_PROMPT_RULES)}")
    if max_tokens is None:
        return list(records)
    kept: list[PromptRecord] = []
    changed = 0
    for record in records:
        ids = tokenize(record.prompt)
        if len(ids) <= max_tokens:
            kept.append(record)
            continue
        where = record.origin or f"prompt {record.prompt_id or record.prompt[:40]!r}"
        if rule == "error":
            raise RecordError(
                f"{where}: the prompt is {len(ids)} tokens ({len(record.prompt)} characters), more than "
                f"data.max_prompt_tokens={max_tokens}. Shorten it, raise data.max_prompt_tokens (within the "
                "model's context), or set data.long_prompts=truncate (keep the first tokens) or drop (leave it out)."
            )
        changed += 1
        if rule == "truncate":
            if detokenize is None:
                raise ValueError("data.long_prompts=truncate needs the tokenizer's decode")
            kept.append(replace(record, prompt=detokenize(ids[:max_tokens]).strip()))
    if changed:
        log.warning(
            "%d prompt(s) longer than data.max_prompt_tokens=%d %s",
            changed,
            max_tokens,
            "truncated" if rule == "truncate" else "left out",
        )
    if not kept:
        raise RecordError(f"every prompt is longer than data.max_prompt_tokens={max_tokens}; raise the limit")
    return kept
