"""Faults planted in real runs: a reward member that fails, a preemption signal, a pickle payload."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch

from t2ir1.rewards.color import ColorAgreementReward


class FailingColorReward(ColorAgreementReward):
    """The real colour reward, raising ``error`` ("oom" or "value") from its ``fail_on_call``-th call on."""

    def __init__(self, fail_on_call: int = 2, error: str = "oom", **kwargs):
        super().__init__(**kwargs)
        self.fail_on_call = fail_on_call
        self.error = error
        self.calls = 0

    def __call__(self, records, images):
        self.calls += 1
        if self.calls >= self.fail_on_call:
            if self.error == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (planted)")
            raise ValueError("reward member failed on a bad image (planted)")
        return super().__call__(records, images)


class SigtermAtStep(L.Callback):
    """Sends this process SIGTERM once ``step`` optimiser steps are done, as a scheduler preempting it would."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Payload:
    """Unpickling this creates ``marker``: proof that a loader executed code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
