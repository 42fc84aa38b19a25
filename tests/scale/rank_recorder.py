"""A callback for the multi-process tests: what each rank saw and computed, one JSON line per step.

Loaded into ``python train.py`` runs by a Hydra override (``+callbacks.recorder._target_=rank_recorder.RankRecorder``)
with ``tests/scale`` on ``PYTHONPATH``; every rank writes its own ``rank{r}.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole parameter (a collective under FSDP2: every rank must call it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class RankRecorder(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _write(self, trainer: L.Trainer, row: dict) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rollout = outputs["record"]
        self._write(
            trainer,
            {
                "kind": "step",
                "rank": trainer.global_rank,
                "world": trainer.world_size,
                "step": trainer.global_step - 1,
                "prompt_ids": [r.prompt_id for r in batch],
                "loss": float(outputs["loss"]),
                "rewards": rollout.rewards.scores.float().tolist(),
                "image_tokens": rollout.image_tokens.tolist(),
                "cots": rollout.cots,
                "logged_loss": float(trainer.callback_metrics["train/loss"]),
            },
        )

    def on_train_end(self, trainer, pl_module) -> None:
        names = {id(p): n for n, p in pl_module.named_parameters()}
        optimised = [names[id(p)] for group in trainer.optimizers[0].param_groups for p in group["params"]]
        trained = [n for n, p in pl_module.policy.named_parameters() if p.requires_grad]
        # the full weights after training (sum and sum of squares per trained tensor)
        checksum = {}
        for name, param in pl_module.policy.named_parameters():
            if param.requires_grad:
                full = _full(param.detach()).double()
                checksum[name] = [float(full.sum()), float(full.pow(2).sum())]
        grids = [len(cb.written) for cb in trainer.callbacks if hasattr(cb, "written")]
        self._write(
            trainer,
            {
                "kind": "end",
                "rank": trainer.global_rank,
                "optimised": optimised,
                "trained": trained,
                "checksum": checksum,
                "grids_written": sum(grids),
                "strategy": type(trainer.strategy).__name__,
                "policy_device": str(pl_module.policy.device),
                "module_device": str(pl_module.device),
            },
        )
