"""The one table of floating-point dtypes a config may name (``model.dtype``, reward members'
``dtype``, FSDP's ``param_dtype``/``reduce_dtype``, HPS's ``autocast``, ``export --dtype``)."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# the half-precision names (autocast targets; presets that need float32 master weights)
LOW_PRECISION: tuple[str, ...] = ("bfloat16", "float16")


def dtype_named(name: str | torch.dtype, key: str) -> torch.dtype:
    """``name`` (a key of :data:`DTYPES`, or already a dtype) as a ``torch.dtype``.

    ``key`` names the config field in the error (``model.dtype``, ``trainer.strategy.param_dtype``).
    """
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[name]
