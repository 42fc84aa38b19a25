"""Prompts for training: a LightningDataModule over any list of ``PromptRecord``.

Where the prompts come from is a ``source``: a zero-argument callable returning
``list[PromptRecord]`` (in config, a ``_partial_: true`` node such as the JSONL loader with
its path, or the compositional generator's ``sample_prompts``). The dataset is a plain
map-style ``Dataset`` and the loaders plain ``DataLoader``\\ s, so under DDP Lightning swaps
in a ``DistributedSampler`` and every rank sees a disjoint share of the prompts.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from t2ir1.data.records import PromptRecord, limit_prompt_tokens

log = logging.getLogger(__name__)


class PromptDataset(Dataset):
    """Map-style dataset: item ``i`` is the ``i``-th ``PromptRecord``."""

    def __init__(self, records: Sequence[PromptRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PromptRecord:
        return self.records[index]


def collate_records(batch: list[PromptRecord]) -> list[PromptRecord]:
    """Keep a batch as a list of records (nothing to stack: prompts are tokenised by the policy)."""
    return list(batch)


def fingerprint(records: Sequence[PromptRecord]) -> str:
    """Short hash of the prompt ids and texts, to notice a resumed run reading different data."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.prompt_id}\t{record.prompt}\n".encode())
    return digest.hexdigest()[:16]


class PromptDataModule(L.LightningDataModule):
    """Serves batches of ``PromptRecord`` (``list[PromptRecord]`` of length ``batch_size``).

    Args:
        source: zero-argument callable returning the full ``list[PromptRecord]``.
        batch_size: prompts per rank per optimisation step (paper: 1; each is sampled G times).
        num_workers: DataLoader worker processes (0 = load in the main process).
        shuffle: reshuffle the training prompts every epoch.
        seed: seeds the holdout split and the shuffling order.
        holdout: number of prompts set aside as the validation set, chosen deterministically
            from ``seed``; 0 = no validation set.
        drop_last: drop a final training batch smaller than ``batch_size``.
        max_prompt_tokens: longest prompt in tokens of ``prompt_tokenizer`` (set by ``train.run``
            before fit); ``None`` = no limit. See :func:`t2ir1.data.records.limit_prompt_tokens`.
        long_prompts: what a longer prompt gets: ``error`` (naming file and line), ``truncate``, ``drop``.
    """

    def __init__(
        self,
        source: Callable[[], Sequence[PromptRecord]],
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        holdout: int = 0,
        drop_last: bool = False,
        max_prompt_tokens: int | None = None,
        long_prompts: str = "error",
    ) -> None:
        super().__init__()
        if not callable(source):
            raise TypeError(
                f"source must be a callable returning list[PromptRecord]; got {type(source).__name__}. "
                "In config, give the source node `_partial_: true`."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if holdout < 0:
            raise ValueError(f"holdout must be >= 0; got {holdout}")
        self.source = source
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.holdout = holdout
        self.drop_last = drop_last
        self.max_prompt_tokens = max_prompt_tokens
        self.long_prompts = long_prompts
        # the policy's tokenizer (encode / decode), given by train.run; None = lengths are not checked
        self.prompt_tokenizer = None
        self.train_set: PromptDataset | None = None
        self.val_set: PromptDataset | None = None
        self._fingerprint = ""

    def setup(self, stage: str | None = None) -> None:
        """Load the prompts once and split off the holdout (same split on every rank)."""
        if self.train_set is not None:
            return
        records = list(self.source())
        if not records:
            raise ValueError("the data source returned no prompts; check data.source")
        not_records = [i for i, r in enumerate(records[:100]) if not isinstance(r, PromptRecord)]
        if not_records:
            raise TypeError(f"the data source must return PromptRecord items; items {not_records} are not")
        if self.max_prompt_tokens is not None and self.prompt_tokenizer is not None:
            tokenizer = self.prompt_tokenizer
            records = limit_prompt_tokens(
                records,
                self.max_prompt_tokens,
                lambda text: tokenizer.encode(text, add_special_tokens=False),
                lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                self.long_prompts,
            )
        if self.holdout >= len(records):
            raise ValueError(
                f"data.holdout={self.holdout} leaves no training prompts out of {len(records)}; lower data.holdout"
            )
        order = list(range(len(records)))
        random.Random(self.seed).shuffle(order)
        held = sorted(order[: self.holdout])
        held_set = set(held)
        self.val_set = PromptDataset([records[i] for i in held])
        self.train_set = PromptDataset([r for i, r in enumerate(records) if i not in held_set])
        self._fingerprint = fingerprint(records)
        log.info(
            "prompts: %d train, %d held out (fingerprint %s)",
            len(self.train_set),
            len(self.val_set),
            self._fingerprint,
        )

    def _require_setup(self) -> None:
        if self.train_set is None:
            raise RuntimeError("PromptDataModule.setup() must run before asking for a dataloader")

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_records,
            drop_last=self.drop_last,
            generator=torch.Generator().manual_seed(self.seed) if self.shuffle else None,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """The held-out prompts in a fixed order; an empty list (no validation) when ``holdout == 0``."""
        self._require_setup()
        if not len(self.val_set):
            return []
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_records,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Leave a batch of records where it is: it holds text and metadata, no tensors.

        Lightning's default transfer rebuilds dataclasses field by field, which fails on the
        frozen ``PromptRecord``; the policy tokenises prompts onto its own device.
        """
        return batch

    def state_dict(self) -> dict[str, Any]:
        """What identifies the data of a run, saved in checkpoints."""
        return {"seed": self.seed, "holdout": self.holdout, "fingerprint": self._fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Warn when a resumed run reads different prompts or splits them differently."""
        current = self.state_dict()
        changed = {k: (v, current.get(k)) for k, v in state_dict.items() if current.get(k) not in (v, "")}
        if changed:
            log.warning("resuming with different data than the checkpoint (saved, now): %s", changed)
