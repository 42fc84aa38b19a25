"""Atomic checkpoint writes, the stateful training loader and RNG state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from t2ir1.lit.checkpointing import (
    AtomicCheckpointIO,
    ResumableDataLoader,
    collect_rng_states,
    restore_rng_states,
)


def test_atomic_write_replaces_and_a_crash_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    io.save_checkpoint({"step": 2, "w": torch.ones(3)}, target)
    assert torch.load(target, weights_only=True)["step"] == 2

    real_save = torch.save

    def crash_midway(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")  # what a kill during the write leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 3}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True)["step"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def batches(loader, count=None):
    out = []
    for batch in loader:
        out.append(batch.tolist())
        if count is not None and len(out) == count:
            break
    return out


def make_loader(seed=7):
    # 10 items, batches of 3 (last one 1 item): 4 batches per epoch, shuffled from a seeded generator
    return ResumableDataLoader(list(range(10)), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stop_after", [1, 2, 4])
def test_loader_resumes_mid_epoch_and_across_epochs(stop_after):
    reference = make_loader()
    uninterrupted = batches(reference) + batches(reference)  # two epochs, 8 batches
    assert uninterrupted[:4] != uninterrupted[4:], "epochs must be shuffled differently"

    first = make_loader()
    seen = batches(first, stop_after)
    state = first.state_dict()

    resumed = make_loader(seed=123)  # a fresh process: its own seed is overwritten by the state
    resumed.load_state_dict(state)
    rest = batches(resumed)  # mid-epoch: the rest of that epoch; after a full epoch: the whole next one
    if stop_after < 4:
        rest += batches(resumed)  # then the next epoch as usual
    assert seen + rest == uninterrupted


def test_like_copies_a_plain_loader():
    plain = DataLoader(list(range(6)), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3))
    copy = ResumableDataLoader.like(plain)
    expected = batches(DataLoader(list(range(6)), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert batches(copy) == expected


def test_rng_states_round_trip():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    states = collect_rng_states()
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_states(states)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    # the states survive a weights_only round trip, as Lightning checkpoints are loaded
    buffer = __import__("io").BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    restore_rng_states(torch.load(buffer, weights_only=True))
    assert torch.equal(torch.rand(3), first[0])
