"""WISE (Niu et al., 2025): world-knowledge prompts judged by a VLM.

Prompts: WISE's JSON files (``data/cultural_common_sense.json``, ``spatio-temporal_reasoning.json``,
``natural_science.json``), each a list of ``{"prompt_id", "Prompt", "Explanation",
"Category"?, "Subcategory"?}``. One image per prompt, named ``<out>/<prompt_id>.png``.

A judge reads the prompt, its explanation and the image and answers three lines
``Consistency: c``, ``Realism: r``, ``Aesthetic Quality: a`` with values in 0..2;
``WiScore = (0.7 c + 0.2 r + 0.1 a) / 2``. Categories follow the official prompt_id ranges
(Cultural 1-400, Time 401-567, Space 568-700, Biology 701-800, Physics 801-900, Chemistry
901-1000); overall = ``0.4 Cultural + 0.167 Time + 0.133 Space + 0.1 (Biology + Physics + Chemistry)``.

Judges: :class:`LocalVlmJudge` (any transformers image-text-to-text model with a chat
template, greedy decoding) or :class:`OpenAICompatibleJudge` (``POST {base_url}/chat/completions``,
temperature 0, the image as a base64 data URL).

**Differences from the official scorer:** the official judge is GPT-4o-2024-05-13; any
other judge gives numbers on a different scale (compare runs judged by the same judge
only). The instruction is t2ir1's wording of the official protocol (``instruction`` in the
config: paste the official text to match it exactly). An answer with a missing score is
marked unparsed and left out of the means (the official script refuses the whole file).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from t2ir1.evaluate.base import Benchmark, BenchmarkFileError, EvalItem, ImageEntry
from t2ir1.evaluate.provenance import describe, model_provenance
from t2ir1.rewards._common import check_local_path, freeze, micro_batches, resolve_dtype

log = logging.getLogger(__name__)

FIELDS = ("consistency", "realism", "aesthetic_quality")
# Official prompt_id ranges (inclusive) of the six categories.
DEFAULT_CATEGORIES = {
    "Cultural": [1, 400],
    "Time": [401, 567],
    "Space": [568, 700],
    "Biology": [701, 800],
    "Physics": [801, 900],
    "Chemistry": [901, 1000],
}
DEFAULT_WEIGHTS = {
    "Cultural": 0.4,
    "Time": 0.167,
    "Space": 0.133,
    "Biology": 0.1,
    "Physics": 0.1,
    "Chemistry": 0.1,
}
# "Consistency: 2", "**Realism**: 1/2", "Aesthetic Quality - 0", "aesthetics (0-2): 1" ...
_SCORE = re.compile(
    r"(consistency|realism|aesthetic(?:s|\s*quality)?)\**\s*(?:\(\s*0\s*-\s*2\s*\))?\s*\**\s*[:=\-–]?\s*\**\s*([0-2])(?![\d.])",
    re.IGNORECASE,
)


def parse_scores(text: str) -> dict[str, float] | None:
    """The three scores of a judge answer (the last mention of each wins); None when one is missing."""
    found: dict[str, float] = {}
    for name, value in _SCORE.findall(text or ""):
        key = name.lower()
        key = "aesthetic_quality" if key.startswith("aesthetic") else key
        found[key] = float(value)
    return found if all(f in found for f in FIELDS) else None


def wiscore(consistency: float, realism: float, aesthetic_quality: float) -> float:
    """``(0.7 c + 0.2 r + 0.1 a) / 2`` in [0, 1]."""
    return (0.7 * consistency + 0.2 * realism + 0.1 * aesthetic_quality) / 2


def read_wise_prompts(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """All rows of the WISE JSON files, validated; errors name the file and the row index."""
    rows: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise BenchmarkFileError(
                f"WISE prompt file {path} does not exist: clone PKU-YuanGroup/WISE and pass "
                "benchmark.prompts=[<clone>/data/cultural_common_sense.json,...]"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BenchmarkFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(data, list):
            raise BenchmarkFileError(
                f"{path}: expected a JSON list of prompt objects, got {type(data).__name__}"
            )
        for index, row in enumerate(data):
            where = f"{path}[{index}]"
            if not isinstance(row, dict):
                raise BenchmarkFileError(f"{where}: expected an object, got {type(row).__name__}")
            pid = row.get("prompt_id")
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise BenchmarkFileError(f"{where}: 'prompt_id' must be an integer, got {pid!r}")
            for key in ("Prompt", "Explanation"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise BenchmarkFileError(f"{where}: '{key}' must be a non-empty string")
            if pid in seen:
                raise BenchmarkFileError(f"{where}: prompt_id {pid} already used at {seen[pid]}")
            seen[pid] = where
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- judges
def render_instruction(template: str, prompt: str, explanation: str) -> str:
    return template.replace("{prompt}", prompt).replace("{explanation}", explanation)


class LocalVlmJudge:
    """A local transformers VLM (``AutoModelForImageTextToText`` + its processor's chat template), greedy.

    Args:
        model_path: hub id or folder (e.g. a Qwen2-VL / LLaVA-OneVision instruct model).
        max_new_tokens: answer length (three short lines need ~32).
        micro_batch_size: images per ``generate`` call.
    """

    def __init__(
        self,
        model_path: str,
        max_new_tokens: int = 64,
        micro_batch_size: int = 4,
        dtype: str = "auto",
        local_files_only: bool = False,
        trust_remote_code: bool = False,
    ):
        self.model_path = model_path
        self.max_new_tokens = max_new_tokens
        self.micro_batch_size = micro_batch_size
        self.dtype_name = dtype
        self.local_files_only = local_files_only
        self.trust_remote_code = trust_remote_code
        self.model = None

    def setup(self, device: str = "cpu") -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self.model is not None:
            return
        check_local_path("wise judge", self.model_path, "model_path")
        self.device = torch.device(device)
        kwargs = {"local_files_only": self.local_files_only, "trust_remote_code": self.trust_remote_code}
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForImageTextToText.from_pretrained(
            self.model_path, dtype=resolve_dtype(self.dtype_name, self.device), **kwargs
        )
        self.model = freeze(model).to(self.device)
        log.info("wise judge: loaded %s on %s", self.model_path, self.device)

    def describe(self) -> dict[str, Any]:
        return model_provenance(
            self.model_path,
            kind="local_vlm",
            decoding="greedy",
            max_new_tokens=self.max_new_tokens,
            dtype=self.dtype_name,
        )

    @torch.inference_mode()
    def __call__(self, system: str, instructions: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        answers: list[str] = []
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        for chunk in micro_batches(len(instructions), self.micro_batch_size):
            texts = [
                self.processor.apply_chat_template(
                    [
                        {"role": "system", "content": system},
                        {
                            "role": "user",
                            "content": [{"type": "image"}, {"type": "text", "text": instruction}],
                        },
                    ],
                    add_generation_prompt=True,
                )
                for instruction in instructions[chunk]
            ]
            inputs = self.processor(
                text=texts,
                images=[im.convert("RGB") for im in images[chunk]],
                return_tensors="pt",
                padding=True,
                padding_side="left",
            ).to(self.device)
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad_id
            )  # [n, P + new]
            answers += self.processor.batch_decode(
                output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return answers


class OpenAICompatibleJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, ...).

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the served model name (official: ``gpt-4o-2024-05-13``).
        api_key_env: environment variable holding the key (unset: no Authorization header).
        timeout_s, max_retries, retry_wait_s: per request; a request that keeps failing raises.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "gpt-4o-2024-05-13",
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 2000,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        retry_wait_s: float = 5.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openai_compatible",
            "endpoint": self.base_url,
            "model": self.model,
            "temperature": 0.0,
        }

    def setup(self, device: str = "cpu") -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"wise judge base_url {self.base_url!r} must start with http:// or https://")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def ask(self, system: str, instruction: str, image: Image.Image) -> str:
        import httpx

        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        body = {
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": system}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": instruction},
                        {"type": "image_url", "image_url": {"url": data_url}},
                    ],
                },
            ],
        }
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                response = httpx.post(
                    f"{self.base_url}/chat/completions",
                    json=body,
                    headers=self._headers(),
                    timeout=self.timeout_s,
                )
                response.raise_for_status()
                return response.json()["choices"][0]["message"]["content"] or ""
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
                last_error = err
                if attempt < self.max_retries:
                    log.warning(
                        "wise judge: request failed (%s), retry %d/%d", err, attempt + 1, self.max_retries
                    )
                    time.sleep(self.retry_wait_s)
        raise RuntimeError(
            f"wise judge: {self.base_url}/chat/completions failed {self.max_retries + 1} times: {last_error}"
        )

    def __call__(self, system: str, instructions: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        return [
            self.ask(system, instruction, image)
            for instruction, image in zip(instructions, images, strict=True)
        ]


# ----------------------------------------------------------------------------- benchmark
class WiseBenchmark(Benchmark):
    """WISE with a configurable VLM judge.

    Args:
        prompts: the WISE JSON file(s).
        judge: a built judge (``LocalVlmJudge`` / ``OpenAICompatibleJudge``; Hydra ``_target_``).
        system_prompt, instruction: the judge's system line and instruction (``{prompt}``, ``{explanation}``).
        categories: category -> inclusive ``[first, last]`` prompt_id range.
        weights: category -> weight of the overall WiScore.
        n_per_prompt: images per prompt (official: 1).
    """

    name = "wise"

    def __init__(
        self,
        prompts: str | Sequence[str],
        judge: Any,
        system_prompt: str,
        instruction: str,
        categories: dict[str, list[int]] | None = None,
        weights: dict[str, float] | None = None,
        n_per_prompt: int = 1,
        name: str = "wise",
    ):
        self.name = name
        self.prompt_files = [prompts] if isinstance(prompts, str | Path) else list(prompts)
        self.judge = judge
        self.system_prompt = system_prompt
        self.instruction = instruction
        self.ranges = dict(categories or DEFAULT_CATEGORIES)
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        if set(self.weights) != set(self.ranges):
            raise ValueError(
                f"wise: weights {sorted(self.weights)} must name exactly the categories {sorted(self.ranges)}"
            )
        self.categories = tuple(self.ranges)
        self.n_per_prompt = n_per_prompt

    def category_of(self, prompt_id: int) -> str:
        for name, (first, last) in self.ranges.items():
            if first <= prompt_id <= last:
                return name
        return "other"

    def load_items(self) -> list[EvalItem]:
        rows = read_wise_prompts(self.prompt_files)
        return [
            EvalItem(
                key=str(row["prompt_id"]),
                prompt=row["Prompt"],
                category=self.category_of(row["prompt_id"]),
                index=i,
                meta=row,
            )
            for i, row in enumerate(rows)
        ]

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        suffix = "" if self.n_per_prompt == 1 else f"_{sample_index}"
        return root / f"{item.key}{suffix}.png"

    def setup(self, device: str = "cpu") -> None:
        self.judge.setup(device)

    def source_files(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.prompt_files]

    def describe_judges(self) -> dict[str, Any]:
        return {"judge": describe(self.judge)}

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        instructions = [
            render_instruction(self.instruction, e.item.prompt, e.item.meta["Explanation"]) for e in entries
        ]
        answers = self.judge(self.system_prompt, instructions, [e.image for e in entries])
        rows = []
        for entry, answer in zip(entries, answers, strict=True):
            parsed = parse_scores(answer)
            row: dict[str, Any] = {
                "category": entry.item.category,
                "answer": answer,
                "parsed": parsed is not None,
            }
            if parsed is None:
                log.warning(
                    "wise: could not read three scores for prompt_id %s from %r", entry.item.key, answer[:200]
                )
                row["score"] = float("nan")
            else:
                row.update(parsed)
                row["score"] = wiscore(parsed["consistency"], parsed["realism"], parsed["aesthetic_quality"])
            rows.append(row)
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        categories = self.category_means(rows)
        present = {
            n: c["score"] for n, c in categories.items() if n in self.weights and not math.isnan(c["score"])
        }
        used = sum(self.weights[n] for n in present)
        overall = sum(self.weights[n] * s for n, s in present.items()) / used if used else float("nan")
        complete = set(present) == set(self.weights)
        unparsed = sum(1 for r in rows if not r.get("parsed", True))
        return {
            "categories": categories,
            "overall": overall,
            "overall_rule": "category-weighted WiScore"
            + ("" if complete else " (renormalised over the categories present)"),
            "notes": {"unparsed judge answers": unparsed},
        }
