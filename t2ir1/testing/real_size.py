"""Janus models at the real Janus-Pro dimensions with random weights (no download), for speed checks.

The text decoder, ``lm_head``, the generation head and embeddings and the VQ model have the
published sizes (:data:`t2ir1.scale.memory.PRESETS` + transformers' Janus defaults); the
understanding vision encoder, which image generation never runs, is kept tiny unless
``full_vision=True``. The tokenizer is the tiny one (its ids are valid in the real vocabulary).
"""

from __future__ import annotations

import tempfile

import torch


def random_janus_policy(
    preset: str = "janus_pro_1b", dtype=torch.bfloat16, device="cpu", full_vision: bool = False, lora: dict | None = None
):
    """A :class:`~t2ir1.policy.janus.JanusPolicy` of ``preset``'s dimensions, random N(0, 0.02) weights."""
    from transformers import JanusForConditionalGeneration, JanusProcessor

    from t2ir1.policy.janus import JanusPolicy
    from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
    from t2ir1.scale.memory import janus_config

    config = janus_config(preset)
    if not full_vision:
        config.vision_config.hidden_size = 64
        config.vision_config.intermediate_size = 128
        config.vision_config.num_hidden_layers = 1
        config.vision_config.num_attention_heads = 2
    tiny = tiny_checkpoint(tempfile.gettempdir() + "/t2ir1-real-size", TinyJanusSpec())
    processor = JanusProcessor.from_pretrained(tiny, local_files_only=True)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, key, getattr(processor.tokenizer, key))
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    model = model.to_empty(device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=generator)
        for name, buffer in model.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
            elif "inv_freq" in name:  # rotary frequencies are computed, not loaded
                base = config.text_config.rope_parameters["rope_theta"]
                dim = config.text_config.hidden_size // config.text_config.num_attention_heads
                buffer.copy_(1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)))
    model.config.image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.image_token)
    model.generation_config.generation_kwargs = {
        "boi_token_id": processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.boi_token)
    }
    return JanusPolicy(model.eval(), processor, lora=lora)
