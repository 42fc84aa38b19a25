"""Dynamic sampling (DAPO, arXiv 2503.14476, §3.2): train only on groups whose rewards differ.

A group whose rewards are all equal (zero std over its valid samples) gets advantage 0 on every
sample and carries no policy-gradient signal, only the KL term. With ``algo.filter_groups=true``
such groups are dropped and the batch is refilled with new prompts from the training stream,
generation round after generation round, until it holds ``B`` informative groups (the batch's
own size) or ``algo.max_gen_rounds`` rounds were generated.

Behaviour follows verl's DAPO recipe (``recipe/dapo``: ``algorithm.filter_groups.enable``,
``max_num_gen_batches``): rounds count the first generation too; the groups kept are the
informative ones in stream order, surplus ones of the last round are dropped (verl's
``batch[:traj_bsz]``); ``max_gen_rounds=0`` means no bound. Where verl raises once the bound
is reached, t2ir1 trains on the groups kept so far (fewer than ``B``), logs it and warns once;
when not a single informative group was found, the first round's batch is trained on as is
(its advantages are 0: only the KL term acts, as without filtering).

The refill prompts come from the same resumable stream as the training batches
(``t2ir1.lit.checkpointing.ResumableDataLoader.next_refill``), whose position counts them, so
a resumed run draws the same refills.

Generations of several rounds are joined here (``concat_generations``): prompt rows are padded
on the side their batch pads (left for the engine's prompts), completions on the right; the
masks mark the padding, and positions are derived from the masks, so padding changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from t2ir1.algos.advantages import zero_std_groups
from t2ir1.rewards.base import RewardOutput
from t2ir1.rollout.engine import Generation

log = logging.getLogger(__name__)

# Generation fields of text rows [B*G, *] and image rows [N, *]; prompt tensors may be padded on either side.
_TEXT_ROW_FIELDS = ("semantic_prompt_ids", "semantic_prompt_mask", "completion_ids", "completion_mask", "text_logp")
_IMAGE_ROW_FIELDS = ("image_prompt_ids", "image_prompt_mask", "image_prompt_positions", "image_tokens", "image_logp")
# (ids, mask) pairs of prompts (pad on the side the batch pads) and of completions (pad on the right)
_PROMPT_PAIRS = (("semantic_prompt_ids", "semantic_prompt_mask"), ("image_prompt_ids", "image_prompt_mask"))
_COMPLETION_FIELDS = ("completion_ids", "completion_mask", "text_logp")


@dataclass
class FilterStats:
    """What dynamic sampling did for one batch (logged as ``filter/*``).

    Attributes:
        groups_generated: groups sampled and scored over all rounds.
        groups_informative: groups among them whose rewards differ (std > 0).
        groups_kept: groups trained on (at most the batch's ``B``).
        rounds: generation rounds, the first included.
        bound_reached: the batch is short of ``B`` informative groups because ``max_gen_rounds``
            was reached or the stream ran out.
    """

    groups_generated: int = 0
    groups_informative: int = 0
    groups_kept: int = 0
    rounds: int = 0
    bound_reached: bool = False

    def as_metrics(self) -> dict[str, float]:
        return {
            "filter/groups_generated": float(self.groups_generated),
            "filter/groups_informative": float(self.groups_informative),
            "filter/groups_kept": float(self.groups_kept),
            "filter/rounds": float(self.rounds),
            "filter/bound_reached": float(self.bound_reached),
        }


def informative_groups(rewards: RewardOutput, samples_per_prompt: int) -> torch.Tensor:
    """``[B]`` bool: True where a group's valid rewards differ (the groups ``adv/zero_std_frac`` does not count)."""
    return ~zero_std_groups(rewards.scores, samples_per_prompt, valid=rewards.valid).cpu()


# ----------------------------------------------------------------------------- selecting and joining rows
def _select(value: Any, rows: torch.Tensor, num_rows: int) -> Any:
    """``value`` restricted to ``rows`` where it holds one entry per row (tensor, list, nested dict)."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == num_rows:
        return value.index_select(0, rows.to(value.device))
    if isinstance(value, list | tuple) and len(value) == num_rows:
        return type(value)(value[i] for i in rows.tolist())
    if isinstance(value, dict):
        return {key: _select(item, rows, num_rows) for key, item in value.items()}
    return value


def _join(values: Sequence[Any], sizes: Sequence[int]) -> Any:
    """Per-row ``values`` of several batches of ``sizes`` rows joined (tensor, list, nested dict);
    anything not per-row is the first batch's."""
    first = values[0]
    if isinstance(first, torch.Tensor) and all(
        isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n and v.shape[1:] == first.shape[1:]
        for v, n in zip(values, sizes, strict=True)
    ):
        return torch.cat(list(values))
    if isinstance(first, list | tuple) and all(isinstance(v, list | tuple) and len(v) == n for v, n in zip(values, sizes, strict=True)):
        return type(first)(item for v in values for item in v)
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
        return {key: _join([v[key] for v in values], sizes) for key in first}
    return first


def select_groups(generation: Generation, groups: torch.Tensor) -> Generation:
    """The rows of ``groups`` (indices into the batch's prompts) of ``generation``, in that order."""
    g, k = generation.group_size, generation.images_per_cot
    groups = groups.long().cpu()
    text_rows = (groups[:, None] * g + torch.arange(g)).flatten()  # [b*G]
    image_rows = (groups[:, None] * g * k + torch.arange(g * k)).flatten()  # [b*G*k]
    changes: dict[str, Any] = {"prompts": [generation.prompts[i] for i in groups.tolist()]}
    for name in _IMAGE_ROW_FIELDS + ("cots", "images"):
        changes[name] = _select(getattr(generation, name), image_rows, generation.num_rows)
    for name in _TEXT_ROW_FIELDS:
        value = getattr(generation, name)
        if value is not None:
            changes[name] = value.index_select(0, text_rows.to(value.device))
    return dataclasses.replace(generation, **changes)


def _pad_to(tensor: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - tensor.shape[1]
    if missing <= 0:
        return tensor
    padding = tensor.new_full((tensor.shape[0], missing, *tensor.shape[2:]), value)
    return torch.cat([padding, tensor] if left else [tensor, padding], dim=1)


def concat_generations(generations: Sequence[Generation], pad_id: int) -> Generation:
    """One generation holding the groups of ``generations`` in order (same ``G``, ``k``, CoT or not).

    Prompt ids are padded with ``pad_id`` on the side their batch pads (left when every row of a
    batch ends in a real token), completions on the right (``pad_id``, mask 0, log-prob 0).

    Raises:
        ValueError: generations of different group sizes or CoT use.
    """
    if len(generations) == 1:
        return generations[0]
    first = generations[0]
    layouts = {(g.group_size, g.images_per_cot, g.has_cot) for g in generations}
    if len(layouts) != 1:
        raise ValueError(f"cannot join generations of different layouts (group size, images per CoT, CoT): {layouts}")
    changes: dict[str, Any] = {"prompts": [p for g in generations for p in g.prompts]}
    for ids_name, mask_name in _PROMPT_PAIRS:
        if getattr(first, ids_name) is None:
            continue
        masks = [getattr(g, mask_name) for g in generations]
        left = all(bool(m[:, -1].all()) for m in masks)
        width = max(m.shape[1] for m in masks)
        changes[ids_name] = torch.cat([_pad_to(getattr(g, ids_name), width, pad_id, left) for g in generations])
        changes[mask_name] = torch.cat([_pad_to(m, width, 0, left) for m in masks])
        if ids_name == "image_prompt_ids" and first.image_prompt_positions is not None:
            # explicit positions (algo.prompt_quirks) pad as their prompts; padded positions are masked
            changes["image_prompt_positions"] = torch.cat(
                [_pad_to(g.image_prompt_positions, width, 0, left) for g in generations]
            )
    if first.has_cot:
        width = max(g.completion_ids.shape[1] for g in generations)
        for name, value in zip(_COMPLETION_FIELDS, (pad_id, 0, 0.0), strict=True):
            changes[name] = torch.cat([_pad_to(getattr(g, name), width, value, left=False) for g in generations])
    for name in ("image_tokens", "image_logp", "cots", "images"):
        changes[name] = _join([getattr(g, name) for g in generations], [g.num_rows for g in generations])
    timings: dict[str, float] = {}
    for g in generations:
        for phase, seconds in g.timings.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    changes["timings"] = timings
    return dataclasses.replace(first, **changes)


def select_reward_rows(rewards: RewardOutput, rows: torch.Tensor) -> RewardOutput:
    """``rewards`` of the sample ``rows`` only (scores, validity and per-row extras)."""
    n = rewards.scores.shape[0]
    return dataclasses.replace(
        rewards,
        scores=rewards.scores.index_select(0, rows.to(rewards.scores.device)),
        valid=None if rewards.valid is None else rewards.valid.index_select(0, rows.to(rewards.valid.device)),
        extras=_select(rewards.extras, rows, n),
    )


def concat_rewards(outputs: Sequence[RewardOutput]) -> RewardOutput:
    """Rewards of several batches, joined in order (validity all True where a batch had none)."""
    if len(outputs) == 1:
        return outputs[0]
    sizes = [o.scores.shape[0] for o in outputs]
    valid = None
    if any(o.valid is not None for o in outputs):
        valid = torch.cat([
            torch.ones(n, dtype=torch.bool) if o.valid is None else o.valid.bool().cpu()
            for o, n in zip(outputs, sizes, strict=True)
        ])
    return dataclasses.replace(
        outputs[0],
        scores=torch.cat([o.scores for o in outputs]),
        valid=valid,
        extras=_join([o.extras for o in outputs], sizes),
    )


# ----------------------------------------------------------------------------- the refill loop
def fill_informative_groups(
    first,
    sample: Callable[[list], Any],
    next_prompts: Callable[[], list | None],
    samples_per_prompt: int,
    max_rounds: int,
    pad_id: int,
    any_rank_short: Callable[[int], int] = lambda short: short,
):
    """Keep the informative groups of ``first`` and refill up to its number of groups.

    Args:
        first: a scored rollout (an object with ``records`` per row, ``generation``, ``rewards``,
            ``timings``: the module's ``Rollout``); its number of groups is the target ``B``.
        sample: prompts -> a scored rollout of them (one more generation round).
        next_prompts: the next batch of prompts of the training stream, or None when it ran out.
        samples_per_prompt: rows per group (``G * k``).
        max_rounds: most generation rounds, the first included; 0 = no bound.
        pad_id: the tokenizer's pad id (to join rounds' prompt and completion ids).
        any_rank_short: this rank's missing groups -> the total over ranks (an all-reduce sum; the
            identity on one process). Every rank runs a round while any rank is short, so that
            collectives inside generation (FSDP all-gathers) stay in step.

    Returns:
        ``(rollout, stats)``: a rollout of the same type as ``first`` holding only the kept
        groups (every round's timings summed), and :class:`FilterStats`.
    """
    target = len(first.records) // samples_per_prompt
    stats = FilterStats()
    parts: list[tuple[Any, torch.Tensor]] = []
    current, kept = first, 0
    while True:
        stats.rounds += 1
        informative = informative_groups(current.rewards, samples_per_prompt)  # [b]
        stats.groups_generated += informative.numel()
        stats.groups_informative += int(informative.sum())
        chosen = informative.nonzero().flatten()[: max(0, target - kept)]  # stream order; surplus dropped
        if chosen.numel():
            parts.append((current, chosen))
            kept += chosen.numel()
        if any_rank_short(target - kept) <= 0:
            break
        if 0 < max_rounds <= stats.rounds:
            stats.bound_reached = True
            break
        prompts = next_prompts()
        if prompts is None:  # the epoch's stream ran out
            stats.bound_reached = True
            break
        current = sample(list(prompts))
    stats.bound_reached = stats.bound_reached and kept < target
    if not parts:  # nothing informative: the first batch as it is (zero advantages, KL only)
        parts = [(first, torch.arange(target))]
    stats.groups_kept = sum(chosen.numel() for _, chosen in parts)
    if len(parts) == 1 and parts[0][0] is first and stats.groups_kept == target:
        return first, stats  # the first batch as it is: nothing to select or join
    generations, rewards, records, timings = [], [], [], {}
    for rollout, chosen in parts:
        rows = (chosen[:, None] * samples_per_prompt + torch.arange(samples_per_prompt)).flatten()
        generations.append(select_groups(rollout.generation, chosen))
        rewards.append(select_reward_rows(rollout.rewards, rows))
        records += [rollout.records[i] for i in rows.tolist()]
        for phase, seconds in rollout.timings.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    combined = dataclasses.replace(
        first,
        records=records,
        generation=concat_generations(generations, pad_id),
        rewards=concat_rewards(rewards),
        timings=timings,
    )
    return combined, stats
