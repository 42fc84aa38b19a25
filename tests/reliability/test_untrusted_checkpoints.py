"""Planted payloads in checkpoints never run; URLs are refused without the documented switch."""

from __future__ import annotations

import pickle

import pytest

from t2ir1.lit.checkpointing import AtomicCheckpointIO
from t2ir1.train import run
from tests.workflow_runs import compose_train


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_payload_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(RuntimeError, match="evil.ckpt cannot be read as a weights-only") as info:
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value)


def test_directory_as_checkpoint_names_the_file_to_pass(tmp_path):
    with pytest.raises(IsADirectoryError, match="last.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path)


def test_remote_ckpt_path_is_refused_before_anything_loads(tmp_path):
    cfg = compose_train(tmp_path / "run", "logger=csv", "ckpt_path=http://example.invalid/evil.ckpt")
    with pytest.raises(ValueError, match="allow_remote_checkpoints=true"):
        run(cfg)
