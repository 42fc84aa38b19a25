"""The token-level prompts the engine samples images from, in one of two layouts (REFERENCE §2.2).

``fixed`` (default): ``"<|User|>: {prompt}. {cot.strip()}\\n\\n<|Assistant|>:<begin_of_image>"``
left-padded; positions from the mask (0 at each row's first real token); the ``full``
unconditional rows attend to the conditional row's real positions only.

``original`` (``algo.prompt_quirks: true``) reproduces CaraJ7/T2I-R1 at 2d9d4d1,
``src/t2i-r1/src/open_r1/trainer/grpo_trainer.py``:

* the decoded CoT is not stripped (``f"{raw_prompt}. {answer}"``, grpo_trainer.py:543-545), so
  its usual leading space gives ``". " + " A ..."``;
* the prompts are right-padded and ``<begin_of_image>`` is appended after the pads with mask 1
  (grpo_trainer.py:563-576);
* no position ids are passed (grpo_trainer.py:613-618 and 393), so transformers numbers the
  slots ``0 .. P-1``: a row with a shorter CoT has a gap between its last text token and
  ``<begin_of_image>`` (the pads' positions, masked out);
* the unconditional rows attend to every position (mask all ones, grpo_trainer.py:600-601).

Both layouts go through the one generation path (``GenerationEngine.sample_images`` takes
explicit positions and an unconditional mask) and the training replay
(``t2ir1.policy.logprobs.image_logprobs`` takes the same positions), so rollout and update see
identical inputs under either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from t2ir1.policy.prompts import image_prompt


@dataclass
class ImagePrompts:
    """Image prompts of ``N`` rows, each ending in ``<begin_of_image>`` in the last column."""

    ids: torch.Tensor  # [N, P]
    mask: torch.Tensor  # [N, P] 1 at real tokens and <begin_of_image>
    positions: torch.Tensor | None = None  # [N, P] explicit position ids (None: from the mask)
    uncond_mask: torch.Tensor | None = None  # [N, P] attention mask of the full unconditional rows


def fixed_image_prompts(policy, prompts: Sequence[str], cots: Sequence[str | None]) -> ImagePrompts:
    """t2ir1's layout: stripped CoT, left padding, positions from the mask."""
    ids, mask = policy.encode_image_prompts(prompts, cots)  # [N, P]
    return ImagePrompts(ids, mask)


def original_image_prompts(policy, prompts: Sequence[str], cots: Sequence[str | None]) -> ImagePrompts:
    """The original's layout (module docstring): unstripped CoT, right padding, ``<begin_of_image>``
    after the pads, positions ``0 .. P-1`` on every row, unconditional rows attending everywhere."""
    texts = [image_prompt(p, c, strip_cot=False) for p, c in zip(prompts, cots, strict=True)]
    enc = policy.tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")  # BOS added
    ids, mask = enc["input_ids"].to(policy.device), enc["attention_mask"].to(policy.device)  # [N, P-1]
    ids = torch.cat([ids, ids.new_full((ids.shape[0], 1), policy.boi_id)], dim=1)  # [N, P]
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids).contiguous()  # [N, P]
    return ImagePrompts(ids, mask, positions, torch.ones_like(mask))


def image_prompts(
    policy, prompts: Sequence[str], cots: Sequence[str | None], quirks: bool = False
) -> ImagePrompts:
    """The engine's image prompts: the original's layout when ``quirks``, else t2ir1's."""
    return (original_image_prompts if quirks else fixed_image_prompts)(policy, prompts, cots)
