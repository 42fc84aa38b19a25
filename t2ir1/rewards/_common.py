"""Helpers shared by the model-backed reward members: dtype, freezing, batching, inputs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bfloat16 on CUDA, float32 elsewhere; else one of :data:`DTYPES`."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unknown; expected 'auto' or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode, no gradients: reward models are never trained."""
    model.eval()
    model.requires_grad_(False)
    return model


def micro_batches(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(total)``."""
    if size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {size}")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def check_inputs(name: str, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> None:
    """One record per image, PIL images only."""
    if len(records) != len(images):
        raise ValueError(
            f"{name}: {len(records)} records but {len(images)} images; pass one record per image"
        )
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"{name}: images[{index}] is {type(image).__name__}; expected a PIL.Image.Image")


def check_local_path(name: str, path: str, what: str) -> None:
    """Fail early with a clear message when a path that looks local does not exist."""
    looks_local = path.startswith((".", "/", "~")) or Path(path).suffix in {".pt", ".bin", ".safetensors"}
    if looks_local and not Path(path).expanduser().exists():
        raise FileNotFoundError(
            f"{name}: {what} {path!r} does not exist; download it or fix the path in conf/reward"
        )


def not_setup_error(name: str) -> RuntimeError:
    return RuntimeError(f"{name}: call setup(device) before scoring (it loads the weights)")
