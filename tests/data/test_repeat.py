"""Batch repetition for several updates per rollout, and exact resume of the repeated stream."""

from __future__ import annotations

import pytest
import torch

from t2ir1.data.repeat import RepeatedBatch, repeat_chunks
from t2ir1.lit.checkpointing import ResumableDataLoader


def _names(stream):
    return ["".join(batch) for batch in stream]


def test_runs_of_chunk_batches_are_served_repeats_times():
    batches = [["a"], ["b"], ["c"], ["d"], ["e"]]
    # chunk 2 (micro-batches of one optimiser step), 2 repeats; the remainder e is repeated too
    assert _names(repeat_chunks(batches, chunk=2, repeats=2)) == list("ababcdcdee")
    assert _names(repeat_chunks(batches, chunk=1, repeats=3)) == list("aaabbbcccdddeee")
    assert _names(repeat_chunks(batches, chunk=1, repeats=1)) == list("abcde")


def test_servings_share_identity_and_count_repeats_without_mutating_served_batches():
    served = list(repeat_chunks([["a"], ["b"]], chunk=2, repeats=2))
    assert all(isinstance(batch, RepeatedBatch) for batch in served)
    assert [b.repeat for b in served] == [0, 0, 1, 1]
    assert served[0].identity is served[2].identity and served[1].identity is served[3].identity
    assert served[0].identity is not served[1].identity
    # each serving is its own object: a prefetched next serving cannot change the current one
    assert served[0] is not served[2] and served[0].repeat == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="repeats >= 1"):
        list(repeat_chunks([["a"]], chunk=1, repeats=0))
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        ResumableDataLoader(list("abcd"), batch_size=1, repeats=2, chunk=0)


def _loader(repeats=2, chunk=2):
    return ResumableDataLoader(
        list("abcdef"), batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(3),
        collate_fn=list, repeats=repeats, chunk=chunk,
    )


def test_resumable_loader_repeats_and_resumes_exactly_mid_cycle():
    loader = _loader()
    assert len(loader) == 12  # 6 batches, each served twice
    full = _names(loader)
    assert sorted(full) == sorted("abcdef" * 2)
    assert full[0:2] == full[2:4] and full[4:6] == full[6:8] and full[8:10] == full[10:12]

    # stop after 5 servings (inside the second cycle), save, resume in a fresh loader
    interrupted = _loader()
    iterator = iter(interrupted)
    first = [next(iterator) for _ in range(5)]
    state = interrupted.state_dict()
    assert state["served"] == 5
    resumed = _loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert _names(first) + _names(rest) == full
    assert [b.repeat for b in rest] == [0, 1, 1, 0, 0, 1, 1]
