"""The Janus-Pro policy: loading, freezing, tokenisation of both prompt levels, decoding.

Trained (REFERENCE §1): the language model (decoder layers, norms, text embeddings) and
``lm_head``. Frozen: the understanding vision encoder + aligner, the VQ model, the
generation embeddings, generation aligner and generation head.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import JanusForConditionalGeneration, JanusProcessor

from t2ir1.dtypes import dtype_named
from t2ir1.policy import logprobs as lp
from t2ir1.policy.prompts import image_prompt, semantic_prompt

log = logging.getLogger(__name__)

# Sub-modules of JanusModel that are never trained.
FROZEN_PARTS = ("vision_model", "aligner", "vqmodel", "generation_embeddings", "generation_aligner", "generation_head")


class CheckpointError(RuntimeError):
    """A policy checkpoint that cannot be found or loaded."""


def describe_load_error(error: BaseException) -> str:
    """``Type: first line`` of a loading error, without torch's advice to load with ``weights_only=False``
    (which would run the file's code)."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    if "weights_only" in first_line:
        first_line = "it holds objects that a weights-only load refuses"
    return f"{type(error).__name__}: {first_line}"


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype_named(dtype, "model.dtype")


class ReferenceModel(nn.Module):
    """The frozen initial policy for the KL term.

    Holds its own copy of the trained parts only (language model + ``lm_head``); the frozen
    Janus parts it needs (generation embeddings, aligner, head) are the policy's own
    modules, shared, not copied.
    """

    def __init__(self, policy: JanusPolicy):
        super().__init__()
        self.language_model = copy.deepcopy(policy.language_model).eval().requires_grad_(False)
        self.lm_head = copy.deepcopy(policy.lm_head).eval().requires_grad_(False)
        # plain attribute, not a registered sub-module: shared with the policy, never saved twice
        object.__setattr__(self, "_policy", policy)

    def train(self, mode: bool = True) -> ReferenceModel:  # the reference never leaves eval mode
        return super().train(False)

    @torch.no_grad()
    def text_logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits=lp.LOGPROB_CHUNK_LOGITS):
        return lp.text_logprobs(
            self.language_model, self.lm_head, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits
        )

    @torch.no_grad()
    def image_logprobs(self, prompt_ids, prompt_mask, image_tokens, chunk_logits=lp.LOGPROB_CHUNK_LOGITS):
        policy = self._policy
        return lp.image_logprobs(
            self.language_model,
            policy.generation_head,
            policy.embed_image_tokens,
            prompt_ids,
            prompt_mask,
            image_tokens,
            chunk_logits,
        )

    @torch.no_grad()
    def sequence_logprobs(
        self, generation, levels: Sequence[str], images_per_cot: int, chunk_logits: int = lp.LOGPROB_CHUNK_LOGITS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same contract as :meth:`JanusPolicy.sequence_logprobs`, without gradients."""
        return _sequence_logprobs(self, generation, levels, images_per_cot, chunk_logits)


def _sequence_logprobs(model, generation, levels, images_per_cot, chunk_logits):
    """BiCoT rows of ``generation`` through ``model``'s own ``text_logprobs`` / ``image_logprobs``."""
    return lp.bicot_logprobs(
        generation,
        levels,
        images_per_cot,
        text_fn=lambda *text: model.text_logprobs(*text, chunk_logits=chunk_logits),
        image_fn=lambda *image: model.image_logprobs(*image, chunk_logits=chunk_logits),
    )


class JanusPolicy(nn.Module):
    """A Janus(-Pro) model with its processor, exposing what BiCoT-GRPO needs."""

    def __init__(self, model: JanusForConditionalGeneration, processor: JanusProcessor):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.freeze_non_trainable()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        dtype: str | torch.dtype = "float32",
        trust_remote_code: bool = False,
        attn_implementation: str | None = "sdpa",
        local_files_only: bool | None = None,
    ) -> JanusPolicy:
        """Load a transformers-format Janus checkpoint (hub id or local directory).

        DeepSeek's original layout (``deepseek-ai/Janus-Pro-*``, the released T2I-R1
        weights) must be converted first; see ``python -m t2ir1.export --help``.
        """
        source = str(name_or_path)
        # hub ids are "org/name"; anything else that does not exist is a mistyped local path
        looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1
        path = Path(source).expanduser()
        if looks_local and not path.exists():
            raise CheckpointError(
                f"model.name_or_path={source!r}: no such directory. Point it at a transformers-format Janus "
                "checkpoint (config.json + *.safetensors + processor files), or use model=tiny offline."
            )
        if path.is_dir() and not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path} has no config.json, so it is not a transformers checkpoint. If it holds DeepSeek's "
                "original Janus layout, convert it with `python -m t2ir1.export convert-deepseek SRC DST`."
            )
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") == "1"
        kwargs = {
            "dtype": _resolve_dtype(dtype),
            "trust_remote_code": trust_remote_code,
            "local_files_only": local_files_only,
        }
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = JanusForConditionalGeneration.from_pretrained(source, **kwargs)
            processor = JanusProcessor.from_pretrained(
                source, trust_remote_code=trust_remote_code, local_files_only=local_files_only
            )
        except OSError as err:
            raise CheckpointError(
                f"could not load Janus checkpoint {source!r}: {err}\n"
                "Without network access, pass a local directory (model.name_or_path=/path/to/Janus-Pro-1B) "
                "or run offline with model=tiny / model=shapeworld."
            ) from err
        except Exception as err:
            raise CheckpointError(
                f"could not load Janus checkpoint {source!r} ({describe_load_error(err)}). Its weight files "
                "are corrupt, truncated, of another model size than its config.json, or hold pickled objects "
                "(never unpickled here). Re-export or re-download the directory (python -m t2ir1.export)."
            ) from None
        return cls(model, processor)

    def freeze_non_trainable(self) -> None:
        for name in FROZEN_PARTS:
            getattr(self.model.model, name).eval().requires_grad_(False)
        self.language_model.requires_grad_(True)
        self.lm_head.requires_grad_(True)

    def train(self, mode: bool = True) -> JanusPolicy:
        super().train(mode)
        for name in FROZEN_PARTS:  # frozen parts stay in eval mode (no dropout drift)
            getattr(self.model.model, name).eval()
        return self

    def make_reference(self) -> ReferenceModel:
        return ReferenceModel(self)

    # ---------------------------------------------------------------- parts
    @property
    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def generation_head(self) -> nn.Module:
        return self.model.model.generation_head

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.vision_config.num_image_tokens

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        """Where the policy computes. The generation head is never sharded or offloaded, so its
        device is the compute device also under FSDP2 with ``cpu_offload`` (where the sharded
        ``lm_head`` weights live in CPU memory between uses)."""
        return next(self.generation_head.parameters()).device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def boi_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.boi_token)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def embed_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """VQ codes ``[N, T]`` -> input embeddings ``[N, T, H]`` (generation embeddings + aligner)."""
        return self.model.prepare_embeddings_for_image_generation(image_tokens)

    # ---------------------------------------------------------------- log-probs
    # The reference (ReferenceModel) has the same three methods: the training step calls them
    # without knowing which of the two it holds.
    def text_logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits=lp.LOGPROB_CHUNK_LOGITS):
        """Semantic-CoT log-probs ``[N, C]`` (differentiable): :func:`t2ir1.policy.logprobs.text_logprobs`."""
        return lp.text_logprobs(
            self.language_model, self.lm_head, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits
        )

    def image_logprobs(self, prompt_ids, prompt_mask, image_tokens, chunk_logits=lp.LOGPROB_CHUNK_LOGITS):
        """Image-token log-probs ``[N, T]`` (differentiable): :func:`t2ir1.policy.logprobs.image_logprobs`."""
        return lp.image_logprobs(
            self.language_model,
            self.generation_head,
            self.embed_image_tokens,
            prompt_ids,
            prompt_mask,
            image_tokens,
            chunk_logits,
        )

    def sequence_logprobs(
        self, generation, levels: Sequence[str], images_per_cot: int, chunk_logits: int = lp.LOGPROB_CHUNK_LOGITS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and mask ``[N, C + T_img]`` of a generated batch's trained levels
        (:func:`t2ir1.policy.logprobs.bicot_logprobs`: text tokens first, each CoT repeated for its images)."""
        return _sequence_logprobs(self, generation, levels, images_per_cot, chunk_logits)

    # ---------------------------------------------------------------- prompts
    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, padding_side="left", return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def encode_semantic_prompts(
        self, prompts: Sequence[str], reasoning_template: str, system_prompt: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded semantic prompts: ids and mask ``[B, P]`` (BOS first)."""
        return self._encode([semantic_prompt(p, reasoning_template, system_prompt) for p in prompts])

    def encode_image_prompts(
        self, prompts: Sequence[str], cots: Sequence[str | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded image prompts ending in ``<begin_of_image>``: ids and mask ``[N, P]``."""
        texts = [image_prompt(p, c) + self.tokenizer.boi_token for p, c in zip(prompts, cots, strict=True)]
        return self._encode(texts)

    def decode_text(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
        return [
            self.tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True).strip()
            for ids, mask in zip(completion_ids, completion_mask, strict=True)
        ]

    # ---------------------------------------------------------------- images
    @torch.no_grad()
    def decode_images(self, image_tokens: torch.Tensor, micro_batch_size: int = 16) -> torch.Tensor:
        """VQ codes ``[N, T]`` -> uint8 RGB ``[N, S, S, 3]`` via ``(x + 1) / 2 * 255``, clipped."""
        vq = self.model.model.vqmodel
        pieces = []
        for start in range(0, image_tokens.shape[0], micro_batch_size):
            pixels = vq.decode(image_tokens[start : start + micro_batch_size])  # [n, 3, S, S] in ~[-1, 1]
            pixels = ((pixels.float() + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8)
            pieces.append(pixels.permute(0, 2, 3, 1).cpu())  # [n, S, S, 3]
        return torch.cat(pieces)

    @staticmethod
    def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
        return [Image.fromarray(p.numpy()) for p in pixels]
