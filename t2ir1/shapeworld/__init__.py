"""ShapeWorld: an offline miniature world (renderer, exact detector, prompts, reward) and a
tiny Janus pretrained on it, shipped as package data in ``t2ir1/shapeworld/checkpoint``.

:func:`checkpoint_path` names the shipped checkpoint; :func:`load_policy` loads it (or any
other directory) through :meth:`t2ir1.policy.janus.JanusPolicy.from_pretrained`, the code
path a hub checkpoint takes. ``python -m t2ir1.shapeworld.pretrain`` rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path

# The shipped checkpoint: a standard transformers Janus directory (config, safetensors, processor).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"


def checkpoint_path() -> Path:
    """Directory of the shipped ShapeWorld checkpoint; a clear error when it is missing."""
    if not (CHECKPOINT_DIR / "config.json").is_file() or not (CHECKPOINT_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the ShapeWorld checkpoint is missing from {CHECKPOINT_DIR} (config.json + model.safetensors). "
            "Reinstall t2ir1 with its package data, or rebuild it: "
            f"`python -m t2ir1.shapeworld.pretrain --out {CHECKPOINT_DIR}`."
        )
    return CHECKPOINT_DIR


def load_policy(name_or_path: str | os.PathLike | None = None, dtype: str = "float32", lora: dict | None = None):
    """The ShapeWorld Janus as a :class:`~t2ir1.policy.janus.JanusPolicy` (``None`` = the shipped one)."""
    from t2ir1.policy.janus import JanusPolicy

    path = checkpoint_path() if name_or_path is None else name_or_path
    return JanusPolicy.from_pretrained(path, dtype=dtype, local_files_only=True, lora=lora)
