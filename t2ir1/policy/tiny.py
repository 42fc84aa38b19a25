"""Build a tiny, randomly initialised Janus checkpoint offline.

The checkpoint is a standard transformers Janus directory (config, safetensors weights,
processor, tokenizer), written with ``save_pretrained`` and loaded back by
``JanusPolicy.from_pretrained`` -- the code path a hub checkpoint takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    LlamaConfig,
)

from t2ir1.policy.prompts import DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT
from t2ir1.policy.tokenizer import CHAT_TEMPLATE, train_tokenizer

log = logging.getLogger(__name__)

# Words the default tokenizer is trained on besides the prompts themselves.
_BASE_CORPUS = (
    SYSTEM_PROMPT,
    DEFAULT_REASONING_PROMPT,
    "a photo of a red cube left of a blue ball. two green cups above a yellow bench.",
    "one two three four five six left right above below next to near on top of the bottom side",
    "red orange yellow green blue purple pink brown black white gray",
)


@dataclass(frozen=True)
class TinyJanusSpec:
    """Sizes of a tiny Janus; the image grid is ``(image_size // patch_size) ** 2`` tokens."""

    image_size: int = 32
    patch_size: int = 8
    codebook_size: int = 256
    vq_embed_dim: int = 8
    vq_base_channels: int = 32
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 2, 2)
    vq_num_res_blocks: int = 1
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    # std of the output heads (generation head, lm_head); transformers' 0.02 makes a tiny
    # random model's distributions almost uniform, so it would neither draw varied images
    # nor respond to a few RL steps
    head_init_std: float = 0.3
    seed: int = 0

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> None:
        downsample = 2 ** (len(self.vq_channel_multiplier) - 1)
        if downsample != self.patch_size:
            raise ValueError(
                f"tiny Janus: the VQ model downsamples by {downsample} (2 ** (len(vq_channel_multiplier) - 1)) "
                f"but patch_size is {self.patch_size}; they must match so that one token covers one patch."
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"tiny Janus: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vq_base_channels % 32:
            raise ValueError("tiny Janus: vq_base_channels must be a multiple of 32 (the VQ model uses GroupNorm(32))")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"tiny Janus: hidden_size {self.hidden_size} must be a multiple of num_attention_heads "
                f"{self.num_attention_heads}, and num_attention_heads a multiple of num_key_value_heads "
                f"{self.num_key_value_heads}"
            )

    def fingerprint(self, corpus: tuple[str, ...]) -> str:
        payload = json.dumps({"spec": asdict(self), "corpus": corpus}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def tiny_janus_config(spec: TinyJanusSpec, vocab_size: int, special_ids: dict[str, int]) -> JanusConfig:
    """A JanusConfig with the layout of Janus-Pro at toy sizes."""
    spec.validate()
    text_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=special_ids["bos"],
        eos_token_id=special_ids["eos"],
        pad_token_id=special_ids["pad"],
        tie_word_embeddings=False,
    )
    vision_config = {
        "hidden_size": spec.vision_hidden_size,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "projection_dim": spec.hidden_size,
        "num_image_tokens": spec.num_image_tokens,
    }
    vq_config = {
        "embed_dim": spec.vq_embed_dim,
        "num_embeddings": spec.codebook_size,
        "latent_channels": spec.vq_base_channels,
        "base_channels": spec.vq_base_channels,
        "channel_multiplier": list(spec.vq_channel_multiplier),
        "num_res_blocks": spec.vq_num_res_blocks,
        "projection_dim": spec.hidden_size,
        "image_token_embed_dim": spec.hidden_size,
    }
    config = JanusConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=special_ids["image"],
        tie_word_embeddings=False,
    )
    return config


def build_tiny_janus(out_dir: str | os.PathLike, spec: TinyJanusSpec, corpus: Iterable[str] = ()) -> Path:
    """Create a random tiny Janus and its processor, save both to ``out_dir``; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(_BASE_CORPUS) + list(corpus), vocab_size=spec.vocab_size)
    special_ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "image": tokenizer.convert_tokens_to_ids(tokenizer.image_token),
    }
    config = tiny_janus_config(spec, vocab_size=len(tokenizer), special_ids=special_ids)
    torch.manual_seed(spec.seed)
    model = JanusForConditionalGeneration(config).eval()
    with torch.no_grad():
        for head in (model.model.generation_head.proj_out, model.model.generation_head.vision_head, model.lm_head):
            head.weight.normal_(0.0, spec.head_init_std)
    # Janus's image generation reads the BOI id from generation_kwargs, as in the hub checkpoints.
    model.generation_config = GenerationConfig(
        bos_token_id=special_ids["bos"],
        eos_token_id=special_ids["eos"],
        pad_token_id=special_ids["pad"],
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(tokenizer.boi_token)},
    )
    image_processor = JanusImageProcessor(size={"height": spec.image_size, "width": spec.image_size})
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        num_image_tokens=spec.num_image_tokens,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def tiny_checkpoint(cache_dir: str | os.PathLike, spec: TinyJanusSpec | None = None, corpus: Iterable[str] = ()) -> Path:
    """Path of a cached tiny checkpoint for ``spec``, building it on first use.

    The directory name carries a fingerprint of the spec and corpus, so changing either
    builds a new checkpoint instead of silently reusing a stale one. The write goes to a
    temporary directory renamed into place, so a crash never leaves half a checkpoint.
    """
    spec = spec or TinyJanusSpec()
    corpus = tuple(corpus)
    target = Path(cache_dir).expanduser() / f"tiny-janus-{spec.fingerprint(corpus)}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    log.info("building tiny Janus checkpoint at %s", target)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    build_tiny_janus(staging, spec, corpus)
    try:
        staging.rename(target)
    except OSError:
        # another process finished the same build first; theirs is identical
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tiny_policy(
    cache_dir: str | os.PathLike,
    spec: dict | TinyJanusSpec | None = None,
    dtype: str = "float32",
    corpus: Iterable[str] = (),
    lora: dict | None = None,
):
    """Build (once) and load a tiny Janus through the same loader as a hub checkpoint."""
    from t2ir1.policy.janus import JanusPolicy

    if isinstance(spec, TinyJanusSpec) or spec is None:
        resolved = spec or TinyJanusSpec()
    else:
        known = set(TinyJanusSpec.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"model.spec has unknown keys {unknown}; known keys: {sorted(known)}")
        values = dict(spec)
        if "vq_channel_multiplier" in values:
            values["vq_channel_multiplier"] = tuple(values["vq_channel_multiplier"])
        resolved = TinyJanusSpec(**values)
    path = tiny_checkpoint(cache_dir, resolved, corpus)
    return JanusPolicy.from_pretrained(path, dtype=dtype, local_files_only=True, lora=lora)
