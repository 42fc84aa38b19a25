"""Exponential moving average of the trained weights (``algo.ema.decay``).

After every optimiser step ``ema = decay * ema + (1 - decay) * theta`` for every trained
parameter (the LoRA adapters under ``model.lora``), starting from the weights training starts
with, so that after ``k`` steps ``ema_k = decay^k * theta_0 + (1 - decay) * sum_i decay^(k-i) theta_i``
(Flow-GRPO and DanceGRPO sample their evaluations from such an average). The average is kept in
float32 whatever the parameters' dtype, by ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_avg_fn``, and travels with the checkpoint (``checkpoint["callbacks"]["EMAWeights"]``).

``generate.py`` / ``eval.py`` (``use_ema=true``) and the held-out ShapeWorld callback
(``callbacks.heldout.use_ema=true``) sample from the EMA weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

log = logging.getLogger(__name__)

STATE_KEY = "EMAWeights"


class _Trained(nn.Module):
    """The trained parameters of a policy as one module (what ``AveragedModel`` copies)."""

    def __init__(self, params: list[nn.Parameter]):
        super().__init__()
        self.params = nn.ParameterList(params)


class EMAWeights(L.Callback):
    """EMA of the policy's trained parameters, updated after every optimiser step, in fp32.

    Args:
        decay: weight of the old average per step, in ``(0, 1)`` (e.g. 0.99; 0.999 for long runs).
    """

    def __init__(self, decay: float):
        if not (isinstance(decay, int | float) and 0 < decay < 1):
            raise ValueError(f"algo.ema.decay={decay!r}: must be in (0, 1), e.g. 0.99 (or null: no EMA)")
        self.decay = float(decay)
        self.names: list[str] = []
        self.averaged: AveragedModel | None = None
        self._last_step: int | None = None
        self._pending: dict | None = None  # state loaded before fit start builds the average

    @property
    def state_key(self) -> str:
        return STATE_KEY

    # ------------------------------------------------------------------ building
    def attach(self, policy: nn.Module) -> None:
        """Start the average at ``policy``'s current trained weights (or the restored state)."""
        named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self._live = _Trained([p for _, p in named])
        # AveragedModel deep-copies the trained parameters only; the copy is cast to float32
        self.averaged = AveragedModel(self._live, avg_fn=get_ema_avg_fn(self.decay), use_buffers=False)
        self.averaged.module.float().requires_grad_(False)
        if self._pending is not None:
            self.load_weights(self._pending)
            self._pending = None
        else:
            self.averaged.update_parameters(self._live)  # first call copies: ema_0 = theta_0

    def update(self) -> None:
        self.averaged.update_parameters(self._live)

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The average, by parameter name (float32)."""
        return {n: p.detach() for n, p in zip(self.names, self.averaged.module.params, strict=True)}

    # ------------------------------------------------------------------ lightning hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.attach(pl_module.policy)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # with gradient accumulation only the micro-batch that stepped the optimiser updates
        if trainer.global_step != self._last_step:
            self.update()
            self._last_step = trainer.global_step

    def state_dict(self) -> dict:
        if self.averaged is None:
            return {}
        return {"decay": self.decay, "n_averaged": int(self.averaged.n_averaged), "weights": self.weights}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        if self.averaged is None:
            self._pending = state_dict
        else:
            self.load_weights(state_dict)

    def load_weights(self, state: dict) -> None:
        weights = state["weights"]
        if list(weights) != self.names:
            raise ValueError(
                f"the checkpoint's EMA holds {len(weights)} tensors ({list(weights)[:2]} ...) but this run trains "
                f"{len(self.names)} ({self.names[:2]} ...): resume with the model settings (model.lora) it was written with"
            )
        with torch.no_grad():
            for param, saved in zip(self.averaged.module.params, weights.values(), strict=True):
                param.copy_(saved)
            self.averaged.n_averaged.fill_(int(state["n_averaged"]))

    # ------------------------------------------------------------------ using the average
    @contextlib.contextmanager
    def swapped_in(self, policy: nn.Module) -> Iterator[None]:
        """``policy`` holds the EMA weights inside the block, its own again after it."""
        with swapped_weights(policy, self.weights):
            yield


@contextlib.contextmanager
def swapped_weights(policy: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Copy ``weights`` (by parameter name) into ``policy`` for the block, then restore its own."""
    params = dict(policy.named_parameters())
    saved = {name: params[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def ema_callback(trainer: L.Trainer) -> EMAWeights | None:
    return next((c for c in trainer.callbacks if isinstance(c, EMAWeights)), None)


def ema_weights_from_checkpoint(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The EMA weights a training checkpoint (``.ckpt`` file) holds, by policy parameter name."""
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        raise ValueError(
            f"use_ema=true: {path} is a sharded (trainer=fsdp) checkpoint folder; the EMA is read from "
            "single-file checkpoints only. Evaluate the raw weights (use_ema=false)."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = (checkpoint.get("callbacks") or {}).get(STATE_KEY) if isinstance(checkpoint, dict) else None
    if not state:
        raise ValueError(
            f"use_ema=true but {path} holds no EMA weights: the run trained with algo.ema.decay=null. "
            "Use use_ema=false, or train with algo.ema.decay=0.99 (say)."
        )
    return state["weights"]


def load_ema_weights(policy: nn.Module, ckpt_path: str | os.PathLike) -> None:
    """Replace ``policy``'s trained parameters by the checkpoint's EMA (after its raw weights loaded)."""
    weights = ema_weights_from_checkpoint(ckpt_path)
    params = dict(policy.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise ValueError(
            f"{ckpt_path}: its EMA names {len(missing)} parameters this model lacks (e.g. {missing[:2]}); "
            "load it with the model settings (model.lora) of the run that wrote it"
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    log.info("loaded the EMA of %d trained tensors from %s", len(weights), ckpt_path)
