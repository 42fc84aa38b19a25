"""Checkpoints a crash cannot corrupt, a checkpoint on preemption, and exact resume.

What a resumed run needs to continue exactly where it stopped (CPU, fixed seeds: the same
losses as a run never interrupted):

* weights, optimiser and scheduler state, step counters: Lightning saves these;
* the module's micro-step, which seeds every prompt's sampling: ``BiCoTGRPOModule``
  saves it in ``on_save_checkpoint``;
* the data position: :class:`ResumableDataLoader` is stateful, so Lightning stores the
  shuffle state at the start of the epoch and how many batches were served, and the
  resumed loader replays the same order and skips what was already trained on;
* the global RNG states (torch, CUDA, numpy, random): :class:`ResumeState` saves and
  restores them.

Writes are atomic (:class:`AtomicCheckpointIO`): a checkpoint goes to a temporary file in
the same directory, is flushed to disk, then renamed over the target, so ``last.ckpt`` is
always either the previous complete checkpoint or the new complete one.

Preemption: Lightning's signal connector turns SIGTERM into a flag that the training loop
checks after every batch, raising ``SIGTERMException`` (under SLURM with auto-requeue it
also bypasses the default SIGTERM action and requeues the job on the requeue signal,
``SIGUSR1``, after saving an ``hpc_ckpt_*.ckpt``). :class:`PreemptionCheckpoint` saves
``last.ckpt`` when that exception arrives, so the batch in flight finishes, is saved, and
the process exits; resume with ``ckpt_path=<dir>/last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

from t2ir1.data.repeat import repeat_chunks

log = logging.getLogger(__name__)

# Key of the RNG states inside a Lightning checkpoint dict.
RNG_KEY = "t2ir1_rng_states"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, fsync, then ``os.replace``.

    Remote paths (``s3://`` ...) fall back to Lightning's own write, which is as atomic as
    the object store's single PUT.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint does not take storage_options; "
                "use a strategy-specific CheckpointIO for remote options"
            )
        fs = get_filesystem(path)
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        if "file" not in protocols and "local" not in protocols:
            super().save_checkpoint(checkpoint, path)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp_name, target)  # atomic on POSIX within one filesystem
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Always ``weights_only=True``: a checkpoint never runs code; errors name the file."""
        target = Path(str(path))
        if target.is_dir():
            raise IsADirectoryError(
                f"ckpt_path={path} is a directory; pass a checkpoint file inside it, e.g. {target / 'last.ckpt'}"
            )
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # torch's UnpicklingError advice (weights_only=False) is not repeated
            raise RuntimeError(
                f"checkpoint {path} cannot be read as a weights-only Lightning checkpoint "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). It is corrupt, "
                "truncated or holds pickled objects (never unpickled here); use a last.ckpt or step-numbered "
                "file written by a t2ir1 run, or start fresh with ckpt_path=null."
            ) from None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- RNG states
def collect_rng_states() -> dict[str, Any]:
    """Global RNG states as plain tensors and ints (loadable with ``weights_only=True``)."""
    version, mt_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`."""
    torch.set_rng_state(states["torch"])
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d; CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


class ResumeState(L.Callback):
    """Saves the global RNG states in every checkpoint and restores them on resume.

    Only the saving rank's states are stored; under DDP every rank resumes with rank 0's
    global RNG state (rollout sampling does not use it: it draws from per-prompt generators).
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get(RNG_KEY)
        if states is None:
            log.warning("checkpoint has no RNG states (saved without t2ir1's ResumeState); RNG not restored")
            return
        restore_rng_states(states)


# ----------------------------------------------------------------------------- preemption
class PreemptionCheckpoint(L.Callback):
    """Save a checkpoint when the run is preempted (SIGTERM), then let the process exit.

    Args:
        dirpath: where to write; ``None`` = the ``ModelCheckpoint`` directory, else
            ``{default_root_dir}/checkpoints``.
        filename: file name of the checkpoint (``last.ckpt`` so that it is the one to resume from).
        on_keyboard_interrupt: also save on Ctrl-C.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt", on_keyboard_interrupt: bool = True):
        self.dirpath = dirpath
        self.filename = filename
        self.on_keyboard_interrupt = on_keyboard_interrupt
        self.saved_path: Path | None = None

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath) / self.filename
        callback = trainer.checkpoint_callback
        directory = getattr(callback, "dirpath", None) or os.path.join(trainer.default_root_dir, "checkpoints")
        return Path(directory) / self.filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        preempted = isinstance(exception, SIGTERMException)
        interrupted = self.on_keyboard_interrupt and isinstance(exception, KeyboardInterrupt)
        if not (preempted or interrupted) or not trainer.training:
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        log.warning(
            "%s at step %d: saved %s; resume with ckpt_path=%s",
            "SIGTERM" if preempted else "interrupted",
            trainer.global_step,
            path,
            path,
        )


# ----------------------------------------------------------------------------- data position
class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning saves and restores mid-epoch.

    ``state_dict()`` holds the shuffle generator's state at the start of the current epoch
    and the number of batches served since; ``load_state_dict`` makes the next epoch
    iterator replay that order and skip the served batches, so a resumed run trains on
    exactly the batches an uninterrupted run would have. Lightning stores the state of any
    stateful loader in ``loops.fit_loop.state_dict.combined_loader``.

    Skipped batches are fetched and dropped (cheap for prompt records). Under DDP the
    ``DistributedSampler`` fixes the order from its seed and epoch; the skip still applies.

    With ``repeats > 1`` every run of ``chunk`` batches is served ``repeats`` times in a row
    (``t2ir1.data.repeat.repeat_chunks``: one rollout, several updates); ``len`` and the
    served count are those of the repeated stream, so resume stays exact.

    Refills (dynamic sampling, ``algo.filter_groups``): :meth:`next_refill` hands the module the
    next batch of the epoch's stream (before repeating), which training then never serves. The
    served counts at which refills were drawn are part of the state, and a resumed loader draws
    them again at the same points while it skips, so the stream continues exactly.

    Not torchdata's ``StatefulDataLoader`` (0.11): it resumes the current epoch, but shuffles the
    next epoch differently from an uninterrupted run, resumes a state taken at an epoch's end
    into an empty epoch, and loses the servings still owed for a chunk under ``repeats > 1``
    (``benchmarks/stateful_dataloader_probe.py`` shows each).

    Args:
        repeats: servings of every batch (``algo.num_iterations``).
        chunk: batches repeated together (``trainer.accumulate_grad_batches``: the
            micro-batches of one optimiser step).
    """

    def __init__(self, *args, repeats: int = 1, chunk: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if repeats < 1 or chunk < 1:
            raise ValueError(
                f"ResumableDataLoader needs repeats >= 1 (algo.num_iterations) and chunk >= 1 "
                f"(trainer.accumulate_grad_batches); got repeats={repeats}, chunk={chunk}"
            )
        self.repeats = repeats
        self.chunk = chunk
        self._epoch_start_state: torch.Tensor | None = None
        self._served = 0
        self._to_skip = 0
        # the epoch's batch stream before repeating (refills draw from it), and the served counts
        # at which refills were drawn this epoch (and, on resume, those to draw again while skipping)
        self._batches: Iterator | None = None
        self._refills: list[int] = []
        self._refills_to_replay: list[int] = []

    @classmethod
    def like(cls, loader: DataLoader, repeats: int = 1, chunk: int = 1) -> ResumableDataLoader:
        """A resumable copy of a map-style ``loader`` (same dataset, sampler, collate, workers)
        serving every run of ``chunk`` batches ``repeats`` times."""
        if isinstance(loader, cls) and (loader.repeats, loader.chunk) == (repeats, chunk):
            return loader
        # Rebuild from sampler + batch_size (not the batch sampler object), so that Lightning,
        # which re-creates the loader from its init arguments to inject a DistributedSampler,
        # keeps the batch size instead of falling back to 1.
        batching = (
            {"batch_sampler": loader.batch_sampler}
            if loader.batch_size is None
            else {"sampler": loader.sampler, "batch_size": loader.batch_size, "drop_last": loader.drop_last}
        )
        return cls(
            loader.dataset,
            **batching,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
            persistent_workers=loader.persistent_workers,
            repeats=repeats,
            chunk=chunk,
        )

    def __len__(self) -> int:
        return super().__len__() * self.repeats

    def _shuffle_generator(self) -> torch.Generator | None:
        sampler = getattr(self.batch_sampler, "sampler", self.sampler)
        return getattr(sampler, "generator", None) or self.generator

    def __iter__(self) -> Iterator:
        generator = self._shuffle_generator()
        self._epoch_start_state = generator.get_state().clone() if generator is not None else None
        skip, self._to_skip = self._to_skip, 0
        replay, self._refills_to_replay = self._refills_to_replay, []
        self._served = 0
        self._refills = []
        batches = self._batches = super().__iter__()
        if self.repeats > 1:
            batches = repeat_chunks(batches, self.chunk, self.repeats)
        return self._serve(batches, skip, replay)

    def _serve(self, iterator: Iterator, skip: int, replay: list[int]) -> Iterator:
        pending = sorted(replay)
        for index, batch in enumerate(iterator):
            self._served = index + 1
            if index >= skip:
                yield batch
                continue
            # the refills drawn while this batch trained, drawn again (and dropped) before the next one
            while pending and pending[0] <= self._served:
                pending.pop(0)
                self.next_refill()

    def next_refill(self) -> Any | None:
        """The next batch of this epoch's stream for a refill (None when the stream ran out or
        no epoch is being served); training will not serve it."""
        if self._batches is None:
            return None
        try:
            batch = next(self._batches)
        except StopIteration:
            return None
        self._refills.append(self._served)
        return batch

    def state_dict(self) -> dict[str, Any]:
        generator = self._shuffle_generator()
        try:
            # every batch the refills left to training is served `repeats` times
            epoch_done = self._served >= (super().__len__() - len(self._refills)) * self.repeats
        except TypeError:  # unsized dataset
            epoch_done = False
        if epoch_done or self._epoch_start_state is None:
            # the next epoch starts from the generator as it is now
            state = generator.get_state().clone() if generator is not None else None
            return {"generator_state": state, "served": 0, "refills": []}
        return {"generator_state": self._epoch_start_state, "served": self._served, "refills": list(self._refills)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        generator = self._shuffle_generator()
        state = state_dict.get("generator_state")
        if generator is not None and state is not None:
            generator.set_state(state)
        self._to_skip = int(state_dict.get("served", 0))
        self._refills_to_replay = [int(mark) for mark in state_dict.get("refills", [])]
        log.info(
            "data loader resumes %d batches into its epoch (%d refill batches drawn)",
            self._to_skip,
            len(self._refills_to_replay),
        )


_BATCH_HOOKS = ("transfer_batch_to_device", "on_before_batch_transfer", "on_after_batch_transfer")


class ResumableData(L.LightningDataModule):
    """Wrap a datamodule so that its training loader is a :class:`ResumableDataLoader`.

    Every other hook and attribute is the wrapped datamodule's.

    Args:
        datamodule: the wrapped datamodule.
        repeats: servings of every training batch (``algo.num_iterations``); the batches of
            one optimiser step (``trainer.accumulate_grad_batches``, read from the trainer)
            are repeated together.
    """

    def __init__(self, datamodule: L.LightningDataModule, repeats: int = 1):
        super().__init__()
        self.inner = datamodule
        self.repeats = repeats
        # batch hooks: Lightning calls a datamodule's only where it overrides them, so forward only those
        for hook in _BATCH_HOOKS:
            if is_overridden(hook, datamodule, L.LightningDataModule):
                setattr(self, hook, getattr(datamodule, hook))

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        self.inner.setup(stage)

    def teardown(self, stage: str) -> None:
        self.inner.teardown(stage)

    def train_dataloader(self):
        loader = self.inner.train_dataloader()
        if not isinstance(loader, DataLoader):
            if self.repeats > 1:
                raise TypeError(
                    f"algo.num_iterations={self.repeats} repeats training batches, which needs a map-style "
                    f"DataLoader from the datamodule; {type(self.inner).__name__}.train_dataloader() returned "
                    f"{type(loader).__name__}"
                )
            return loader
        chunk = max(1, self.trainer.accumulate_grad_batches) if self.trainer is not None else 1
        return ResumableDataLoader.like(loader, repeats=self.repeats, chunk=chunk)

    def val_dataloader(self):
        return self.inner.val_dataloader()

    def test_dataloader(self):
        return self.inner.test_dataloader()

    def predict_dataloader(self):
        return self.inner.predict_dataloader()

    def on_exception(self, exception: BaseException) -> None:
        self.inner.on_exception(exception)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)

    def __getattr__(self, name: str):
        # reached only for attributes the wrapper lacks (e.g. train_set, batch_size)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
