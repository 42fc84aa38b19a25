"""Helpers shared by the model-backed reward members: dtype, freezing, batching, inputs, pixels.

Image preprocessing is tensor work over the whole batch: the PIL images are copied
once into uint8 tensors (one per image size), then resized with torch's antialiased
bicubic on uint8, which follows Pillow's ``Image.resize(..., BICUBIC)`` to within one
grey level (the uint8 kernel is a port of Pillow-SIMD's), and padded and normalised
as batch ops. Only the copy out of PIL remains per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.dtypes import DTYPES


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


def uint8_groups(images: Sequence[Image.Image]) -> list[tuple[list[int], torch.Tensor]]:
    """RGB pixels grouped by image size: ``[(indices, uint8 [G, 3, H, W])]`` in order of first appearance.

    A training batch shares one size (one group, one copy per image into one
    buffer); mixed sizes give one group each. The tensors are channels-last views
    of an ``[G, H, W, 3]`` buffer, the layout torch's uint8 resize kernels prefer.
    """
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault((image.height, image.width), []).append(index)
    groups = []
    for (height, width), indices in by_size.items():
        buffer = np.empty((len(indices), height, width, 3), dtype=np.uint8)  # [G, H, W, 3]
        for slot, index in enumerate(indices):
            image = images[index]
            buffer[slot] = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        groups.append((indices, torch.from_numpy(buffer).permute(0, 3, 1, 2)))  # [G, 3, H, W]
    return groups


def resize_bicubic(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[G, 3, H, W]`` -> uint8 ``[G, 3, height, width]``, antialiased bicubic (Pillow's BICUBIC)."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    return F.interpolate(pixels, size=(height, width), mode="bicubic", antialias=True, align_corners=False)


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, S, S]`` -> float32 ``(pixels / 255 - mean) / std``; ``mean``, ``std`` are ``[1, 3, 1, 1]``."""
    return (pixels.float() / 255.0 - mean) / std


def single_token_ids(tokenizer, words, owner: str, model_path) -> list[int]:
    """The id of each word, which must be one known token (e.g. the VQA answers yes / no)."""
    found = []
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"{owner}: answer {word!r} is not one known token of {model_path}'s tokenizer (ids {ids})")
        found.append(ids[0])
    return found


def load_frozen(owner: str, model_cls, model_path, dtype_name: str, device, local_files_only: bool):
    """Processor and frozen model of a transformers checkpoint, on ``device`` in ``dtype_name``.

    Returns ``(processor, model, device, dtype)``; a missing local path fails with a message
    naming ``owner``'s ``model_path`` setting.
    """
    from transformers import AutoProcessor

    check_local_path(owner, model_path, "model_path")
    device = torch.device(device)
    dtype = resolve_dtype(dtype_name, device)
    processor = AutoProcessor.from_pretrained(model_path, local_files_only=local_files_only)
    model = model_cls.from_pretrained(model_path, dtype=dtype, local_files_only=local_files_only)
    return processor, freeze(model).to(device), device, dtype
