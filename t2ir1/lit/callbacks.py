"""Callbacks: sample grids and CoT tables written as training goes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from t2ir1.lit.grid import captioned_grid, sample_caption

log = logging.getLogger(__name__)


def step_record(outputs):
    """The :class:`~t2ir1.lit.module.StepRecord` that ``training_step`` returned (``outputs["record"]``),
    or None when the step returned none (another module, a skipped batch)."""
    return outputs.get("record") if isinstance(outputs, Mapping) else None


class SampleGridCallback(L.Callback):
    """Every ``every_n_steps`` optimiser steps, write a PNG grid of the latest rollout
    (image, prompt, CoT start, reward per member) and a JSONL of its prompts and CoTs.

    Files go to ``{out_dir}/step_{step:06d}.png`` / ``.jsonl``; loggers that can show images
    (W&B) receive the grid too.
    """

    def __init__(self, out_dir: str = "samples", every_n_steps: int = 1, max_images: int = 16, columns: int = 4, cell_size: int = 160):
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.columns = columns
        self.cell_size = cell_size
        self.written: list[Path] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rollout = step_record(outputs)
        step = trainer.global_step
        if rollout is None or not trainer.is_global_zero:
            return
        if step % self.every_n_steps and step != trainer.max_steps:
            return
        if self.written and self.written[-1].stem == f"step_{step:06d}":
            return  # several micro-batches per optimiser step: one grid per step
        count = min(self.max_images, len(rollout.images))
        raw = rollout.rewards.extras.get("raw", {})
        totals = rollout.rewards.scores.float().tolist()
        captions, rows = [], []
        for i in range(count):
            members = {name: float(scores[i]) for name, scores in raw.items()}
            captions.append(sample_caption(rollout.records[i].prompt, rollout.cots[i], totals[i], members))
            rows.append({"step": step, "prompt": rollout.records[i].prompt, "cot": rollout.cots[i], "reward": totals[i], **members})
        grid = captioned_grid(rollout.images[:count], captions, columns=self.columns, cell_size=self.cell_size)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step_{step:06d}.png"
        grid.save(path)
        with open(path.with_suffix(".jsonl"), "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        self.written.append(path)
        for logger in trainer.loggers:
            log_image = getattr(logger, "log_image", None)
            if callable(log_image):
                log_image(key="samples/grid", images=[grid], step=step, caption=[f"step {step}"])
            log_table = getattr(logger, "log_table", None)
            if callable(log_table):
                columns = list(rows[0].keys())
                log_table(key="samples/cot", columns=columns, data=[[r[c] for c in columns] for r in rows], step=step)


class CrashCheckpoint(L.Callback):
    """Save ``last.ckpt`` when training dies of an error (a reward member raising, out of memory),
    as :class:`~t2ir1.lit.checkpointing.PreemptionCheckpoint` does on SIGTERM; and, at the start
    of fit, delete temporary checkpoint files that a killed write left behind.

    The state saved is the one of the last finished optimiser step (an error inside a step
    leaves the weights as they were; the micro-batches of the failed step are not replayed on
    resume). Under several processes nothing is saved on a crash: the other ranks are not in
    the save's collective calls, and waiting for them would hang; the newest periodic
    checkpoint stands.

    Args:
        dirpath: where to write; ``None`` = the ``ModelCheckpoint`` directory, else
            ``{default_root_dir}/checkpoints``.
        filename: file name of the checkpoint (``last.ckpt``: the one to resume from).
    """

    # Temporary files of t2ir1.lit.checkpointing.AtomicCheckpointIO: ".{name}.{random}.tmp".
    TEMPORARY_PATTERN = ".*.ckpt.*.tmp"

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt"):
        self.dirpath = dirpath
        self.filename = filename
        self.saved_path: Path | None = None
        self.removed: list[Path] = []
        # true while this callback writes the crash checkpoint (on_save_checkpoint then adjusts it)
        self._saving = False

    def checkpoint_dir(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        directory = getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(directory or Path(trainer.default_root_dir) / "checkpoints")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        directory = self.checkpoint_dir(trainer)
        if stage != "fit" or not trainer.is_global_zero or not directory.is_dir():
            return
        for orphan in sorted(directory.glob(self.TEMPORARY_PATTERN)):
            orphan.unlink(missing_ok=True)
            self.removed.append(orphan)
        if self.removed:
            log.warning("removed %d temporary checkpoint file(s) left by a killed write in %s", len(self.removed), directory)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self._saving:
            return
        # the failed batch was started, never completed: record the loop as it stood after the last
        # completed batch, so that a resumed run counts and labels its steps as an uninterrupted run
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if progress:
            for counters in (progress["total"], progress["current"]):
                counters["ready"] = counters["started"] = counters["completed"]

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException | KeyboardInterrupt) or not trainer.training:
            return  # preemption and Ctrl-C: PreemptionCheckpoint's job
        if trainer.global_step == 0:
            # nothing trained yet, or a failure before a resumed run restored its checkpoint:
            # saving now would overwrite a good last.ckpt with the untrained weights
            return
        if trainer.world_size > 1:
            log.error("training failed (%s); no crash checkpoint under %d processes", type(exception).__name__, trainer.world_size)
            return
        path = self.checkpoint_dir(trainer) / self.filename
        self._saving = True
        try:
            trainer.save_checkpoint(path)
        except Exception as save_error:  # the run's own error must surface, not this one
            log.error("training failed (%s) and %s could not be saved: %s", type(exception).__name__, path, save_error)
            return
        finally:
            self._saving = False
        self.saved_path = path
        log.error(
            "training failed at step %d (%s: %s); saved %s. Fix the cause, then resume with ckpt_path=%s",
            trainer.global_step,
            type(exception).__name__,
            str(exception).splitlines()[0] if str(exception) else "",
            path,
            path,
        )
