"""Overlapped scoring: score image chunks on a worker thread while the next chunk is generated.

The engine calls ``on_images(start_row, images)`` as each decode chunk exists. An
``OverlappedScorer`` submits ``reward(records[start:start+n], images)`` to one worker
thread per chunk and ``collect()`` waits for every chunk and returns ONE
``RewardOutput`` for the whole batch, in row order, so the step's advantages still see
the whole group. Rows must be covered exactly once; a gap or an overlap is an error.

Which rewards overlap is configuration: ``reward.async=true`` (an option of
``RewardEnsemble`` and ``RemoteReward``, read with :func:`async_option`) makes
:func:`scorer_for` return a scorer; the training step then calls::

    scorer = scorer_for(self.reward, row_records)  # None unless reward.async=true
    generation = engine.generate(..., on_images=scorer.on_images if scorer else None)
    rewards = scorer.collect() if scorer else self.reward(row_records, generation.images)

With ``RemoteReward`` the worker thread only waits on the server, so the chunk is
scored on the reward GPUs while the training GPU generates the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import Reward, RewardOutput

ASYNC_OPTION = "async"


def async_option(options: dict[str, Any], owner: str) -> bool:
    """The ``async`` flag of a reward config node (a Python keyword, so it arrives in ``**options``).

    Any other leftover key is a config error naming ``owner``.
    """
    unknown = sorted(set(options) - {ASYNC_OPTION})
    if unknown:
        raise TypeError(f"{owner}: unknown option(s) {unknown}; the only extra reward option is 'async'")
    value = options.get(ASYNC_OPTION, False)
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: reward.async = {value!r}; expected true or false")
    return value


def scorer_for(reward: Reward, records: Sequence[PromptRecord]) -> OverlappedScorer | None:
    """An :class:`OverlappedScorer` for ``records`` when ``reward`` scores while generating, else None."""
    if getattr(reward, "scores_while_generating", False):
        return OverlappedScorer(reward, records)
    return None


def merge_values(values: list[Any], where: str) -> Any:
    """Concatenate per-chunk values: tensors on dim 0, lists/tuples end to end, dicts key by key."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values, dim=0) if first.dim() > 0 else torch.stack(values)
    if isinstance(first, dict):
        keys = list(first)
        for value in values[1:]:
            if list(value) != keys:
                raise ValueError(f"merge_values: chunk extras at {where!r} have keys {list(value)}, expected {keys}")
        return {key: merge_values([value[key] for value in values], f"{where}.{key}") for key in keys}
    if isinstance(first, (list, tuple)):
        return [item for value in values for item in value]
    # Scalars and other per-batch metadata: one entry per chunk.
    return list(values)


def merge_outputs(outputs: list[RewardOutput]) -> RewardOutput:
    """One ``RewardOutput`` from per-chunk outputs (in row order): scores ``[B]``, extras merged."""
    if not outputs:
        raise ValueError("merge_outputs: no chunk outputs to merge")
    names = {output.name for output in outputs}
    if len(names) != 1:
        raise ValueError(f"merge_outputs: chunks come from different rewards {sorted(names)}")
    scores = torch.cat([output.scores for output in outputs], dim=0)  # [B]
    extras = merge_values([output.extras for output in outputs], "extras")
    return RewardOutput(outputs[0].name, scores, extras)


class OverlappedScorer:
    """Scores decode chunks on a single worker thread; ``collect()`` returns the whole batch."""

    def __init__(self, reward: Reward, records: Sequence[PromptRecord]) -> None:
        self.reward = reward
        self.records = list(records)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t2ir1-reward")
        self._chunks: list[tuple[int, int, Future[RewardOutput]]] = []

    def on_images(self, start_row: int, images: Sequence[Image.Image]) -> None:
        """Engine callback: schedule scoring of rows ``[start_row, start_row + len(images))``."""
        stop = start_row + len(images)
        if start_row < 0 or stop > len(self.records):
            raise ValueError(
                f"OverlappedScorer: chunk rows [{start_row}, {stop}) outside the batch of {len(self.records)} records"
            )
        chunk_records = self.records[start_row:stop]
        chunk_images = list(images)
        future = self._executor.submit(self.reward, chunk_records, chunk_images)
        self._chunks.append((start_row, stop, future))

    def collect(self) -> RewardOutput:
        """Wait for every chunk; check rows are covered exactly once; return the merged output."""
        try:
            chunks = sorted(self._chunks, key=lambda chunk: chunk[0])
            expected = 0
            for start, stop, _ in chunks:
                if start != expected:
                    kind = "overlap" if start < expected else "gap"
                    raise ValueError(
                        f"OverlappedScorer: chunk rows {kind} at row {min(start, expected)} "
                        f"(chunks {[(a, b) for a, b, _ in chunks]}, batch {len(self.records)})"
                    )
                expected = stop
            if expected != len(self.records):
                raise ValueError(
                    f"OverlappedScorer: chunks cover rows [0, {expected}) of a batch of {len(self.records)}; "
                    "the engine did not report every decode chunk"
                )
            outputs = [future.result() for _, _, future in chunks]
            return merge_outputs(outputs)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker thread (pending chunks finish first)."""
        self._executor.shutdown(wait=True)
