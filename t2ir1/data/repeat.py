"""Serving each batch several times, for several updates per rollout (``algo.num_iterations``).

Reuse of a batch lives in the data stream, not in the training step (TRL's ``RepeatSampler``):
every run of ``chunk`` consecutive batches (the micro-batches of one optimiser step, i.e.
``trainer.accumulate_grad_batches``) is served ``repeats`` times before the next run starts::

    chunk=2, repeats=2:   A B C D E   ->   A B A B C D C D E E

so every prompt is trained on ``repeats`` times in ``repeats`` consecutive optimiser steps,
and a loader that counts served batches (``t2ir1.lit.checkpointing.ResumableDataLoader``)
resumes exactly. Each served batch is a :class:`RepeatedBatch`, a list that carries the
identity it shares with its other servings (how the module finds the rollout it sampled for
the batch) and its repeat index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class RepeatedBatch(list):
    """One serving of a batch (a list of items): which batch it is and which repeat.

    Attributes:
        identity: an object shared by every serving of the same batch and by no other batch
            (hashable by identity): the key under which a consumer keeps what it computed for
            the batch's first serving.
        repeat: 0 on the first serving, ``1 .. repeats - 1`` on the repeats.
        repeats: how many times this batch is served in all.
    """

    def __init__(self, items: Iterable[Any], identity: object, repeat: int, repeats: int) -> None:
        super().__init__(items)
        self.identity = identity
        self.repeat = repeat
        self.repeats = repeats


def repeat_chunks(batches: Iterable[list], chunk: int, repeats: int) -> Iterator[RepeatedBatch]:
    """Serve every run of ``chunk`` consecutive ``batches`` ``repeats`` times in a row.

    The last run may be shorter than ``chunk`` (an epoch's remainder); it is repeated too.
    Every serving is a new :class:`RepeatedBatch` (loaders prefetch: a served object must not
    change afterwards); the servings of one input batch share its ``identity``.

    Raises:
        ValueError: ``chunk`` or ``repeats`` below 1.
    """
    if chunk < 1 or repeats < 1:
        raise ValueError(f"repeat_chunks needs chunk >= 1 and repeats >= 1; got chunk={chunk}, repeats={repeats}")
    run: list[tuple[list, object]] = []

    def serve() -> Iterator[RepeatedBatch]:
        for repeat in range(repeats):
            for batch, identity in run:
                yield RepeatedBatch(batch, identity, repeat, repeats)

    for batch in batches:
        run.append((batch, object()))
        if len(run) == chunk:
            yield from serve()
            run = []
    if run:
        yield from serve()
