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
    """Scores of one member for a batch: ``scores`` is ``[B]`` float32 on CPU."""

    name: str
    scores: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    name: str

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Load weights onto ``device``; called once per process before the first call."""

    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]``; returns ``[B]`` scores."""
