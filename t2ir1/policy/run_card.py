"""The run card: the prompts and sampling settings a policy was trained with travel with its weights.

A checkpoint trained on the original T2I-R1 reasoning prompt must be evaluated with that
prompt, and a ShapeWorld policy trained at CFG 1 must not be sampled at the paper's CFG 5
(the demo measured 30% held-out accuracy at w = 1 against 7.5% at w = 5). The card stores:

* ``reasoning_prompt``: the template *text* (not a name or a path, which can change);
* ``system_prompt``: the system line of the semantic prompt;
* ``training``: the sampling settings of the training rollouts;
* ``evaluation``: the sampling settings to evaluate with (the training ones unless a run
  or a converter says otherwise: a preset may train at CFG 1 and evaluate at 5).

Where it lives: under :data:`CHECKPOINT_KEY` in a Lightning checkpoint (written by the
module's ``on_save_checkpoint``) and as :data:`CARD_FILE` next to exported or converted
weights (``t2ir1.export``). ``generate.py`` and ``eval.py`` fill every generation setting the
user left ``null`` from the card's ``evaluation`` section (:func:`generation_settings`), and
fall back to the paper's values (:data:`PAPER_SAMPLING`) when the model has no card.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt

log = logging.getLogger(__name__)

# Key of the card in a Lightning checkpoint.
CHECKPOINT_KEY = "t2ir1_run_card"
# File name of the card next to exported / converted weights.
CARD_FILE = "t2ir1_run_card.json"
# File of a generation / evaluation run recording the settings it sampled with (results name them).
SETTINGS_FILE = "generation_settings.json"
# Version of the card's layout.
CARD_VERSION = 1
# The sampling settings a card records, at t2ir1's defaults (conf/algo/bicot_grpo.yaml: the paper's,
# REFERENCE §2.1-2.2, with the CoT's top-k off); top-k 0 and top-p 1.0 are off.
PAPER_SAMPLING: dict[str, Any] = {
    "cfg_weight": 5.0,
    "text_temperature": 1.0,
    "image_temperature": 1.0,
    "max_new_tokens": 1024,
    "text_top_k": 0,
    "text_top_p": 1.0,
    "image_top_k": 0,
    "image_top_p": 1.0,
    "cfg_uncond": "full",
}
# The original T2I-R1's sampling (transformers' generate defaults: top_k 50 on the CoT): the card of
# converted release weights (``convert-deepseek --reasoning-prompt``).
ORIGINAL_SAMPLING: dict[str, Any] = {**PAPER_SAMPLING, "text_top_k": 50}


class RunCardError(ValueError):
    """A run card that cannot be read."""


@dataclass
class RunCard:
    """What a policy was trained with; see the module docstring."""

    reasoning_prompt: str
    system_prompt: str = SYSTEM_PROMPT
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "run card") -> RunCard:
        if not isinstance(data, Mapping) or "reasoning_prompt" not in data:
            raise RunCardError(f"{source}: not a t2ir1 run card (no reasoning_prompt); delete it or rewrite it")
        known = {k: data[k] for k in ("reasoning_prompt", "system_prompt", "training", "evaluation", "version") if k in data}
        card = cls(**known)
        load_reasoning_prompt(card.reasoning_prompt)  # exactly one {}: fails here, naming the problem
        return card

    def save(self, folder: str | os.PathLike) -> Path:
        """Write :data:`CARD_FILE` into ``folder``."""
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def check_sampling_keys(values: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """``values`` as a plain dict whose keys are all sampling settings a card records; else a clear error."""
    values = {str(key): value for key, value in (values or {}).items()}
    unknown = sorted(set(values) - set(PAPER_SAMPLING))
    if unknown:
        raise RunCardError(f"{where} has unknown keys {unknown}; allowed: {', '.join(PAPER_SAMPLING)}")
    return values


def card_from_settings(settings: Any, reasoning_template: str, evaluation: Mapping[str, Any] | None = None) -> RunCard:
    """The card of a training run from its ``GRPOSettings`` (any object with the sampling attributes).

    The evaluation section is the training one updated with ``evaluation`` (default: the settings'
    ``eval_sampling``, ``algo.eval_sampling`` in the config): by default a policy is evaluated as it
    was trained. Settings the object lacks are recorded at the paper's value.
    """
    training = {key: getattr(settings, key, default) for key, default in PAPER_SAMPLING.items()}
    if evaluation is None:
        evaluation = getattr(settings, "eval_sampling", None)
    return RunCard(
        reasoning_prompt=reasoning_template,
        system_prompt=getattr(settings, "system_prompt", SYSTEM_PROMPT),
        training=training,
        evaluation={**training, **check_sampling_keys(evaluation, "the evaluation settings")},
    )


def add_to_checkpoint(checkpoint: dict, settings: Any, reasoning_template: str) -> None:
    """Store the run's card in a Lightning checkpoint dict (``on_save_checkpoint``)."""
    checkpoint[CHECKPOINT_KEY] = card_from_settings(settings, reasoning_template).to_dict()


def card_from_checkpoint(ckpt_path: str | os.PathLike) -> RunCard | None:
    """The card of a Lightning checkpoint file (None for checkpoints written before cards existed)."""
    import torch

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        log.info("%s is not a single checkpoint file: no run card read from it", path)
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    data = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return RunCard.from_dict(data, source=str(path)) if data is not None else None


def card_from_folder(folder: str | os.PathLike | None) -> RunCard | None:
    """The card next to a model's weights (:data:`CARD_FILE`), or None."""
    if not folder:
        return None
    path = Path(str(folder)).expanduser() / CARD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunCardError(f"{path}: not valid JSON ({error}); fix or delete it") from error
    return RunCard.from_dict(data, source=str(path))


def find_run_card(policy: Any = None, ckpt_path: str | os.PathLike | None = None) -> tuple[RunCard | None, str | None]:
    """``(card, where)``: the checkpoint's card first (its weights are the ones used), else the model folder's."""
    if ckpt_path:
        card = card_from_checkpoint(ckpt_path)
        if card is not None:
            return card, str(ckpt_path)
    model = getattr(policy, "model", None)
    folder = getattr(getattr(model, "config", None), "_name_or_path", None)
    card = card_from_folder(folder)
    return (card, str(Path(str(folder)) / CARD_FILE)) if card is not None else (None, None)


def generation_settings(
    requested: Mapping[str, Any], policy: Any = None, ckpt_path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """``requested`` with every ``null`` sampling setting and prompt filled in.

    Order: the user's value (non-null in ``requested``), else the run card's ``evaluation``
    section (and its prompts), else the paper's value (:data:`PAPER_SAMPLING`, t2ir1's default
    reasoning prompt, the paper's system prompt). Every filled value is logged with its source.
    """
    card, where = find_run_card(policy, ckpt_path)
    resolved = dict(requested)
    card_values: dict[str, Any] = {}
    defaults: dict[str, Any] = {**PAPER_SAMPLING, "reasoning_prompt": "default", "system_prompt": SYSTEM_PROMPT}
    if card is not None:
        card_values = {**card.evaluation, "reasoning_prompt": card.reasoning_prompt, "system_prompt": card.system_prompt}
    taken_from_card, taken_default = [], []
    for key, default in defaults.items():
        if resolved.get(key) is not None:
            continue
        if key in card_values:
            resolved[key] = card_values[key]
            taken_from_card.append(key)
        else:
            resolved[key] = default
            taken_default.append(key)
    if taken_from_card:
        log.info("generation settings from the run card %s: %s", where, {k: _short(resolved[k]) for k in taken_from_card})
    if taken_default:
        log.info("generation settings at the paper's defaults (no run card value): %s", {k: _short(resolved[k]) for k in taken_default})
    return resolved


def _short(value: Any) -> Any:
    return value if not isinstance(value, str) or len(value) < 60 else value[:57] + "..."


def record_settings(folder: str | os.PathLike, settings: Mapping[str, Any]) -> Path:
    """Write the resolved generation settings of a run to ``folder/`` :data:`SETTINGS_FILE`.

    Settings left ``null`` in the config come from a run card, so the config alone no longer
    says what was sampled; results must (REFERENCE §6: CFG, CoT, prompt of every result).
    """
    path = Path(folder) / SETTINGS_FILE
    path.write_text(json.dumps(dict(settings), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def recorded_settings(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The settings :func:`record_settings` wrote into ``folder``, or None."""
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
