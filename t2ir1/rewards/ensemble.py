"""Weighted sum of reward members (REFERENCE §2.4: the paper's plain sum is all weights 1.0).

``RewardEnsemble`` is what the top-level ``reward`` config node instantiates, also
for a single member (an ensemble of one), so that ``reward.weights.<name>=0.5``
works in every configuration and sweeps can vary weights.

NaN policy: a member returns NaN for a sample it could not score; an infinite score is
treated the same way (it would otherwise dominate its group's baseline).

* ``"error"`` (default) raises, naming the member and the prompt(s);
* ``"drop"`` makes the sample unscorable: its ensemble score is NaN and
  ``RewardOutput.valid`` is False for it, so it takes no part in its group's mean and std
  and gets advantage 0 (it carries only the KL term; ``algos.advantages.group_normalized``).
  A sample is unscorable when any member could not score it: a sum missing a term is not
  comparable with the full sums of its group. ``extras["dropped"]`` tells which member
  failed on which sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import Reward, RewardOutput
from t2ir1.rewards.overlap import async_option

NAN_POLICIES = ("error", "drop")


class RewardEnsemble:
    """Scores = ``sum_m weights[m] * members[m](records, images).scores``; ``[B]`` float32 on CPU.

    ``extras``: ``raw`` and ``weighted`` (member name -> ``[B]``), ``dropped`` (member name ->
    ``[B]`` bool, the samples that member could not score) and ``members`` (each member's own
    extras). ``verdicts``: every member's verdicts as ``<member>/<verdict>``. ``valid``: ``[B]`` bool, False where any member could not score the sample.
    """

    def __init__(
        self,
        members: Mapping[str, Reward],
        weights: Mapping[str, float],
        nan_policy: str = "error",
        name: str = "ensemble",
        **options: Any,
    ) -> None:
        # ``async`` (a Python keyword) is the only option: score decode chunks while generating
        self.scores_while_generating = async_option(options, "RewardEnsemble")
        members = dict(members)
        weights = {str(key): value for key, value in dict(weights).items()}
        if not members:
            raise ValueError("RewardEnsemble: no members; give at least one under reward.members")
        missing = sorted(set(members) - set(weights))
        extra = sorted(set(weights) - set(members))
        if missing or extra:
            raise ValueError(
                "RewardEnsemble: weight keys must equal member keys; "
                f"members without a weight: {missing}; weights without a member: {extra}. "
                "Set reward.weights.<name> for every reward.members.<name>, or remove the stray weight."
            )
        for key, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"RewardEnsemble: weights[{key!r}] = {value!r}; expected a finite number")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"RewardEnsemble: nan_policy {nan_policy!r} is unknown; expected one of {NAN_POLICIES}"
            )
        for key, member in members.items():
            if not callable(member) or not hasattr(member, "setup"):
                raise TypeError(
                    f"RewardEnsemble: member {key!r} ({type(member).__name__}) lacks setup()/__call__"
                )
        self.name = name
        self.members: dict[str, Reward] = members
        self.weights: dict[str, float] = {key: float(weights[key]) for key in members}
        self.nan_policy = nan_policy
        self._device: torch.device | None = None

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Set up every member once on ``device`` (a second call with the same device is a no-op)."""
        device = torch.device(device)
        if self._device == device:
            return
        for member in self.members.values():
            member.setup(device)
        self._device = device

    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]`` with every member; returns ``[B]`` weighted sums."""
        batch = len(records)
        total = torch.zeros(batch, dtype=torch.float32)
        raw: dict[str, torch.Tensor] = {}
        weighted: dict[str, torch.Tensor] = {}
        dropped: dict[str, torch.Tensor] = {}
        member_extras: dict[str, Any] = {}
        verdicts: dict[str, torch.Tensor] = {}
        for key, member in self.members.items():
            output = member(records, images)
            scores = output.scores.detach().float().cpu()
            if scores.shape != (batch,):
                raise ValueError(
                    f"RewardEnsemble: member {key!r} returned scores of shape {tuple(scores.shape)}, expected ({batch},)"
                )
            unscorable = ~torch.isfinite(scores)  # [B] NaN or +-inf
            if unscorable.any() and self.nan_policy == "error":
                rows = unscorable.nonzero().flatten().tolist()
                prompts = [records[i].prompt for i in rows]
                values = [float(scores[i]) for i in rows]
                raise ValueError(
                    f"RewardEnsemble: member {key!r} returned non-finite scores {values} for prompt(s) {prompts}; "
                    "fix the member, or set reward.nan_policy=drop to leave such samples out of the baseline "
                    "(advantage 0)"
                )
            term = self.weights[key] * scores  # [B]
            raw[key] = scores
            weighted[key] = term
            dropped[key] = unscorable
            total += torch.where(unscorable, torch.zeros_like(term), term)
            member_extras[key] = output.extras
            verdicts.update({f"{key}/{name}": verdict for name, verdict in output.verdicts.items()})
        valid = ~torch.stack(list(dropped.values())).any(dim=0)  # [B]
        total = torch.where(valid, total, torch.full_like(total, float("nan")))
        extras = {"raw": raw, "weighted": weighted, "dropped": dropped, "members": member_extras}
        return RewardOutput(self.name, total, extras, valid=valid, verdicts=verdicts)
