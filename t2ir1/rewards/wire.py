"""The reward server's wire format: what ``RemoteReward`` sends and ``t2ir1.rewards.serve`` answers.

Request (JSON)::

    {"records": [PromptRecord.to_dict(), ...],           # every field, extras included
     "images": [{"height": H, "width": W, "rgb": "<base64 of H*W*3 uint8, row-major>"}, ...]}

Images travel as raw uint8 RGB (lossless, and nothing to compress or decompress on
either side: a 384x384 image is 442 KB, 590 KB in base64). Response (JSON)::

    {"name": str, "scores": <tensor>, "extras": <value>}

Values are tagged JSON so that a ``RewardOutput`` comes back equal to the in-process one:
tensors keep dtype and shape (``{"__tensor__": dtype, "shape": [...], "data": [...]}``,
float32 values are exact in JSON doubles), tuples stay tuples, non-finite floats are
spelled out (JSON has no NaN), and dataclasses of ``t2ir1`` (e.g. ShapeWorld detections)
are rebuilt from their fields. Anything else is an error naming where it was found.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import RewardOutput

# Dataclasses are rebuilt only from this package (never an arbitrary import path from the wire).
TRUSTED_MODULE_PREFIX = "t2ir1."
_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool)
}
_FLOAT_WORDS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class WireError(ValueError):
    """A request or response that does not follow the wire format; the message says where."""


# ----------------------------------------------------------------------------- images
def encode_image(image: Image.Image) -> dict[str, Any]:
    """One image as ``{"height", "width", "rgb"}`` (uint8 RGB, base64)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    return {
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "rgb": base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode("ascii"),
    }


def image_bytes(item: Any, where: str, max_side: int) -> tuple[int, int, bytes]:
    """Validate one wire image; returns ``(height, width, raw bytes)`` or raises ``WireError``."""
    if not isinstance(item, dict):
        raise WireError(f"{where}: expected an object with height, width, rgb; got {type(item).__name__}")
    missing = [key for key in ("height", "width", "rgb") if key not in item]
    if missing:
        raise WireError(f"{where}: missing field(s) {missing}")
    height, width, rgb = item["height"], item["width"], item["rgb"]
    for key, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_side:
            raise WireError(f"{where}.{key} = {value!r}; expected an integer in [1, {max_side}]")
    if not isinstance(rgb, str):
        raise WireError(f"{where}.rgb: expected a base64 string, got {type(rgb).__name__}")
    try:
        raw = base64.b64decode(rgb, validate=True)
    except (binascii.Error, ValueError) as error:
        raise WireError(f"{where}.rgb is not valid base64 ({error})") from None
    if len(raw) != height * width * 3:
        raise WireError(
            f"{where}.rgb holds {len(raw)} bytes; a {height}x{width} uint8 RGB image needs {height * width * 3}"
        )
    return height, width, raw


def decode_image(height: int, width: int, raw: bytes) -> Image.Image:
    """The PIL image of validated raw bytes (see :func:`image_bytes`)."""
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)  # [H, W, 3]
    return Image.fromarray(pixels.copy())


# ---------------------------------------------------------------------------- request
def encode_request(records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> dict[str, Any]:
    """The JSON body scoring ``images[i]`` against ``records[i]``."""
    if len(records) != len(images):
        raise ValueError(f"encode_request: {len(records)} records but {len(images)} images")
    return {"records": [record.to_dict() for record in records], "images": [encode_image(im) for im in images]}


def decode_records(rows: Any, where: str = "records") -> list[PromptRecord]:
    """Validated ``PromptRecord`` s of a request (errors name the row)."""
    if not isinstance(rows, list):
        raise WireError(f"{where}: expected a list of records, got {type(rows).__name__}")
    try:
        return [PromptRecord.from_dict(row, where=f"{where}[{index}]") for index, row in enumerate(rows)]
    except ValueError as error:
        raise WireError(str(error)) from None


# ---------------------------------------------------------------------------- values
def encode_value(value: Any, where: str = "value") -> Any:
    """Tagged JSON of a reward value (see the module docstring); ``where`` names it in errors."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": str(value)}
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise WireError(f"{where}: tensors of dtype {dtype} cannot travel; expected one of {sorted(_DTYPES)}")
        tensor = value.detach().cpu()
        flat = tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
        data = [encode_value(item, where) for item in flat.reshape(-1).tolist()]
        return {"__tensor__": dtype, "shape": list(tensor.shape), "data": data}
    if isinstance(value, np.ndarray | np.generic):
        return encode_value(torch.as_tensor(np.asarray(value)), where)
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [encode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: encode_value(item, f"{where}.{key}") for key, item in value.items()}
        return {"__items__": [[encode_value(k, where), encode_value(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(TRUSTED_MODULE_PREFIX):
            raise WireError(f"{where}: dataclass {cls.__module__}.{cls.__qualname__} is not from t2ir1")
        fields = {f.name: encode_value(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise WireError(f"{where}: a {type(value).__name__} cannot travel to or from the reward server")


def decode_value(value: Any, where: str = "value") -> Any:
    """Inverse of :func:`encode_value`."""
    if isinstance(value, list):
        return [decode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        dtype = _DTYPES.get(value["__tensor__"])
        if dtype is None:
            raise WireError(f"{where}: unknown tensor dtype {value['__tensor__']!r}")
        data = [decode_value(item, where) for item in value["data"]]
        return torch.tensor(data, dtype=dtype).reshape(value["shape"])
    if "__float__" in value:
        return _FLOAT_WORDS[value["__float__"]]
    if "__tuple__" in value:
        return tuple(decode_value(item, f"{where}[{i}]") for i, item in enumerate(value["__tuple__"]))
    if "__items__" in value:
        return {decode_value(k, where): decode_value(v, f"{where}[{k!r}]") for k, v in value["__items__"]}
    if "__dataclass__" in value:
        module_name, _, qualname = value["__dataclass__"].partition(":")
        if not module_name.startswith(TRUSTED_MODULE_PREFIX):
            raise WireError(f"{where}: refusing to rebuild {value['__dataclass__']!r} (not a t2ir1 dataclass)")
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not dataclasses.is_dataclass(cls):
            raise WireError(f"{where}: {value['__dataclass__']!r} is not a dataclass")
        return cls(**{key: decode_value(item, f"{where}.{key}") for key, item in value["fields"].items()})
    return {key: decode_value(item, f"{where}.{key}") for key, item in value.items()}


def encode_output(output: RewardOutput) -> dict[str, Any]:
    """The JSON response of one ``RewardOutput``."""
    return {
        "name": output.name,
        "scores": encode_value(output.scores, "scores"),
        "extras": encode_value(output.extras, "extras"),
    }


def decode_output(body: Any, expected_rows: int) -> RewardOutput:
    """The ``RewardOutput`` of a response; checks it has one score per image sent."""
    if not isinstance(body, dict) or not {"name", "scores", "extras"} <= set(body):
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise WireError(f"response: expected an object with name, scores, extras; got {keys}")
    scores = decode_value(body["scores"], "scores")
    if not isinstance(scores, torch.Tensor) or scores.shape != (expected_rows,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise WireError(f"response: scores of shape {shape}, expected ({expected_rows},)")
    return RewardOutput(str(body["name"]), scores, decode_value(body["extras"], "extras"))


# ------------------------------------------------------------------- per-request split
def slice_rows(value: Any, start: int, stop: int, batch: int) -> Any:
    """Rows ``[start, stop)`` of a batch-level value: tensors and lists of length ``batch`` are
    per-row and get sliced, dicts recursively; anything else is batch-level and is copied."""
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, list | tuple):
        return value[start:stop] if len(value) == batch else value
    if isinstance(value, dict):
        return {key: slice_rows(item, start, stop, batch) for key, item in value.items()}
    return value


def split_output(output: RewardOutput, sizes: Sequence[int]) -> list[RewardOutput]:
    """Split one batched ``RewardOutput`` into consecutive parts of ``sizes`` rows (the inverse of
    :func:`t2ir1.rewards.overlap.merge_outputs` for per-row values)."""
    batch = int(output.scores.shape[0])
    if sum(sizes) != batch:
        raise ValueError(f"split_output: sizes {list(sizes)} do not add up to the batch of {batch}")
    parts, start = [], 0
    for size in sizes:
        stop = start + size
        parts.append(
            RewardOutput(output.name, output.scores[start:stop], slice_rows(output.extras, start, stop, batch))
        )
        start = stop
    return parts
