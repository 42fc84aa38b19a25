"""Tiny, randomly initialised judge models saved with ``save_pretrained`` (loaded back by the harness's own code)."""

from __future__ import annotations

from pathlib import Path

import torch

from t2ir1.rewards.tiny import bert_vocab

WORDS = [
    "yes", "no", "a", "an", "the", "photo", "of", "and", "red", "blue", "green", "white", "black", "cat", "dog",
    "cup", "car", "bench", "bird", "clock", "left", "right", "on", "side", "next", "to", "near", "?", ".",
    "[DEC]",
]  # fmt: skip


def build_tiny_clip(folder: Path) -> Path:
    """A CLIP with 32 px images (patch 8), a 1-layer text tower and a WordPiece tokenizer."""
    from transformers import BertTokenizerFast, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = BertTokenizerFast(vocab=bert_vocab(WORDS), do_lower_case=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    out = folder / "clip"
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_blip(folder: Path) -> Path:
    """A BLIP VQA with 32 px images (patch 8), 1-layer text encoder/decoder, and a WordPiece tokenizer."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = BertTokenizerFast(vocab=bert_vocab(WORDS), do_lower_case=True)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "encoder_hidden_size": 32,
            "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(config).eval()
    out = folder / "blip"
    model.save_pretrained(out)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
