"""A Lightning callback for ``benchmarks/demo_step.py``: the wall time of every batch start.

It is loaded into the current tree and into an older commit alike (``+callbacks.step_clock``),
so it uses nothing of t2ir1. The times go to the JSON file named by ``T2IR1_STEP_CLOCK`` when
training ends.
"""

from __future__ import annotations

import json
import os
import time

import lightning as L


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())  # the end of the last step
        with open(os.environ["T2IR1_STEP_CLOCK"], "w", encoding="utf-8") as handle:
            json.dump(self.starts, handle)
