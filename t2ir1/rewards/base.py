"""The reward protocol: every member scores (records, images) in one batched call.

A member is frozen, loads its models in ``setup(device)`` (never at import or in
``__init__``), and returns one score per image. ``NaN`` marks a sample the member
could not score; the ensemble decides what to do with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord


@dataclass
class RewardOutput:
    """Scores of one member (or of the ensemble) for a batch.

    Attributes:
        name: who scored.
        scores: ``[B]`` float32 on CPU; NaN where a sample could not be scored.
        extras: member-specific details (per-member scores, detections ...), for logs and debugging.
        verdicts: per-sample yes/no judgements ``[B]`` bool by name (a ShapeWorld member's
            ``correct``); the ensemble prefixes them with the member's key
            (``shapeworld/correct``). The public route for callbacks: they read verdicts, never
            a member's extras.
        valid: ``[B]`` bool, False for samples that could not be scored (set by the ensemble
            under ``nan_policy=drop``; their score is NaN, they take no part in their group's
            baseline and get advantage 0); ``None`` means every sample was scored.
    """

    name: str
    scores: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    valid: torch.Tensor | None = None
    verdicts: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    name: str

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Load weights onto ``device``; called once per process before the first call."""

    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]``; returns ``[B]`` scores."""
