"""HPS v2.1 human-preference score (REFERENCE §3, ``hps``).

An open_clip ViT-H-14 with the ``HPS_v2.1_compressed.pt`` state dict; the score is
the cosine similarity of the L2-normalised image and text features (no logit
scale). Preprocessing as HPS: RGB, resize the longest side to the model's image
size (bicubic), pad to a centred square with black, OpenAI CLIP mean/std.

Built on ``open_clip_torch`` directly rather than the ``hpsv2`` package, which pins
old pytest/protobuf versions and vendors an old open_clip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.dtypes import DTYPES, LOW_PRECISION
from t2ir1.rewards._common import (
    check_local_path,
    freeze,
    normalise,
    resize_bicubic,
    resolve_dtype,
    uint8_groups,
)
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.frozen import FrozenModel

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {name: DTYPES[name] for name in LOW_PRECISION}

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_hps_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an HPS checkpoint: a state dict, or a dict holding one under ``"state_dict"``.

    A DistributedDataParallel ``module.`` prefix is stripped.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"HPS checkpoint {path}: expected a dict, got {type(checkpoint).__name__}")
    state_dict = checkpoint.get("state_dict", checkpoint)
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def resize_longest_and_pad(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """uint8 ``[B, 3, size, size]`` RGB: longest side resized to ``size`` (bicubic), centred on black.

    Batched tensor ops per image size (see ``_common``); matches the PIL path of
    the original (``resize`` bicubic, paste on a black square) to within one grey level.
    """
    canvas = torch.zeros((len(images), 3, size, size), dtype=torch.uint8)  # [B, 3, S, S]
    for indices, pixels in uint8_groups(images):  # pixels: [G, 3, H, W]
        height, width = pixels.shape[-2:]
        scale = size / max(width, height)
        new_height, new_width = round(height * scale), round(width * scale)
        top, left = (size - new_height) // 2, (size - new_width) // 2
        resized = resize_bicubic(pixels, new_height, new_width)  # [G, 3, h, w]
        canvas[indices, :, top : top + new_height, left : left + new_width] = resized
    return canvas


class HPSReward(FrozenModel):
    """HPS v2.1 score of each (prompt, image) pair; ``[B]`` float32 (cosine, in ``[-1, 1]``, ~0.2-0.35 in practice).

    Args:
        checkpoint: path to ``HPS_v2.1_compressed.pt`` (or any state dict of ``arch``).
        arch: open_clip architecture name.
        model_config_path: optional JSON file or folder of extra open_clip model configs
            to register before building ``arch`` (used for tiny test architectures).
        context_length: tokenizer context (77 for CLIP).
        mean, std: image normalisation (OpenAI CLIP).
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``: the weights.
        autocast: ``null`` or ``float16`` / ``bfloat16``: run the encoders under ``torch.autocast``
            in that dtype on the model's device (the original: fp32 weights under fp16 autocast).
        micro_batch_size: images per forward pass.
    """

    def __init__(
        self,
        checkpoint: str,
        arch: str = "ViT-H-14",
        model_config_path: str | None = None,
        context_length: int = 77,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        dtype: str = "auto",
        autocast: str | None = None,
        micro_batch_size: int = 16,
        name: str = "hps",
    ) -> None:
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(
                f"{name}: autocast {autocast!r} is unknown; expected null or one of {', '.join(AUTOCAST_DTYPES)}"
            )
        super().__init__(name, checkpoint, dtype, micro_batch_size, local_files_only=True)
        self.autocast = autocast
        self.checkpoint = checkpoint
        self.arch = arch
        self.model_config_path = model_config_path
        self.context_length = context_length
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Build ``arch`` with open_clip (no pretrained download), load the HPS state dict, freeze (once)."""
        import open_clip

        if self.model is not None:
            return
        self.device = torch.device(device)
        self.dtype = resolve_dtype(self.dtype_name, self.device)
        if self.model_config_path is not None:
            check_local_path(self.name, self.model_config_path, "model_config_path")
            open_clip.add_model_config(self.model_config_path)
        if self.arch not in open_clip.list_models():
            raise ValueError(
                f"{self.name}: open_clip has no architecture {self.arch!r}; "
                "register its JSON with model_config_path or use e.g. ViT-H-14"
            )
        if not Path(self.checkpoint).expanduser().exists():
            raise FileNotFoundError(
                f"{self.name}: checkpoint {self.checkpoint!r} does not exist (HPS_v2.1_compressed.pt)"
            )
        model = open_clip.create_model(self.arch, pretrained=None, device="cpu")
        state_dict = load_hps_state_dict(Path(self.checkpoint).expanduser())
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"{self.name}: checkpoint {self.checkpoint} does not fit open_clip {self.arch}: {error}"
            ) from error
        self.model = freeze(model).to(self.device, self.dtype)
        self.tokenizer = open_clip.get_tokenizer(self.arch, context_length=self.context_length)
        image_size = self.model.visual.image_size
        self.image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
        log.info(
            "%s: loaded %s from %s on %s (%s)", self.name, self.arch, self.checkpoint, self.device, self.dtype
        )

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, 3, S, S]`` float32 normalised pixels (S = the model's image size)."""
        return normalise(resize_longest_and_pad(images, self.image_size), self.mean, self.std)

    @torch.inference_mode()
    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i].prompt``; returns ``[B]`` float32 on CPU."""
        return RewardOutput(self.name, self.score_images(records, images, self._score_chunk))

    def _score_chunk(self, records: Sequence[PromptRecord], pixels: torch.Tensor) -> torch.Tensor:
        """``[b]`` cosine of each image and its prompt; ``pixels`` ``[b, 3, S, S]``."""
        # GRPO scores G images per prompt: encode each distinct prompt once
        prompts = [r.prompt for r in records]
        position = {prompt: index for index, prompt in enumerate(dict.fromkeys(prompts))}
        unique = list(position)
        prompt_index = torch.tensor([position[p] for p in prompts], device=self.device)  # [b]
        tokens = self.tokenizer(unique).to(self.device)  # [u, 77]
        with torch.autocast(
            self.device.type, dtype=AUTOCAST_DTYPES.get(self.autocast), enabled=self.autocast is not None
        ):
            image_features = self.model.encode_image(pixels, normalize=True)  # [b, D]
            text_features = self.model.encode_text(tokens, normalize=True)[prompt_index]  # [u, D] -> [b, D]
        return (image_features.float() * text_features.float()).sum(dim=-1)
