"""Yes/no question answering for question-set benchmarks (DPG-Bench, OneIG-Bench alignment).

Two kinds of judge answer a yes/no question about an image:

* :class:`BlipYesNoJudge` -- BLIP VQA (the harness's T2I-CompBench judge): "yes" when
  ``P(yes) / (P(yes) + P(no)) > 0.5`` at the first answer token;
* :class:`ChatYesNoJudge` -- any text judge with the WISE interface
  (``judge(system, instructions, images) -> answers``: a local transformers VLM or an
  OpenAI-compatible endpoint) asked ``"{question} Please answer 'Yes' or 'No' only."``; the
  answer counts as yes when its first word is "yes" (case and punctuation ignored).

:func:`as_yes_no` turns whatever judge a config built into one of these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from t2ir1.evaluate.judges import BlipVqaJudge
from t2ir1.evaluate.provenance import describe

DEFAULT_QUESTION_TEMPLATE = "{question} Please answer 'Yes' or 'No' only."
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def read_yes(answer: str) -> bool:
    """True when the first word of ``answer`` is "yes" (``"Yes."``, ``"**yes**, it is"``)."""
    match = _FIRST_WORD.search(answer or "")
    return bool(match) and match.group(0).lower() == "yes"


class BlipYesNoJudge(BlipVqaJudge):
    """BLIP VQA answering yes when its yes-probability (yes vs no at the first token) exceeds 0.5."""

    def answer_yes_no(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[tuple[float, str]]:
        """Per (image, question): ``(1.0 or 0.0, "p_yes=0.731")``."""
        probabilities = self.yes_probability(images, questions)
        return [(float(p > 0.5), f"p_yes={float(p):.4f}") for p in probabilities.tolist()]


class ChatYesNoJudge:
    """A text-answering judge asked yes/no questions.

    Args:
        judge: ``LocalVlmJudge`` / ``OpenAICompatibleJudge`` (or anything with their call signature).
        question_template: the instruction, with ``{question}``.
        system_prompt: the system line (empty: none).
    """

    def __init__(
        self, judge: Any, question_template: str = DEFAULT_QUESTION_TEMPLATE, system_prompt: str = ""
    ):
        if "{question}" not in question_template:
            raise ValueError(f"question_template {question_template!r} must contain {{question}}")
        self.judge = judge
        self.question_template = question_template
        self.system_prompt = system_prompt

    def setup(self, device: str = "cpu") -> None:
        self.judge.setup(device)

    def answer_yes_no(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[tuple[float, str]]:
        instructions = [self.question_template.replace("{question}", q) for q in questions]
        answers = self.judge(self.system_prompt, instructions, images)
        return [(float(read_yes(a)), a) for a in answers]

    def describe(self) -> dict[str, Any]:
        return {**describe(self.judge), "question_template": self.question_template}


def as_yes_no(judge: Any, question_template: str = DEFAULT_QUESTION_TEMPLATE, system_prompt: str = "") -> Any:
    """``judge`` itself when it answers yes/no, else a :class:`ChatYesNoJudge` around it."""
    if hasattr(judge, "answer_yes_no"):
        return judge
    if callable(judge) and hasattr(judge, "setup"):
        return ChatYesNoJudge(judge, question_template, system_prompt)
    raise TypeError(
        f"{type(judge).__name__} can neither answer yes/no questions nor chat; use benchmark/judge="
        "blip_vqa, local_vlm or openai"
    )
