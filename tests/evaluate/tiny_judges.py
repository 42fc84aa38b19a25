"""Tiny, randomly initialised judge models saved with ``save_pretrained`` (loaded back by the harness's own code)."""

from __future__ import annotations

from pathlib import Path

import torch

from t2ir1.testing.tiny_rewards import bert_vocab

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


def build_tiny_mask2former(folder: Path, labels: tuple[str, ...] = ("cat", "dog", "cup")) -> Path:
    """A Mask2Former (COCO-instance layout) with a 1-block-per-stage Swin, 64 px inputs and ``labels`` as classes."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=2,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        num_queries=6,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    out = folder / "mask2former"
    model.save_pretrained(out)
    Mask2FormerImageProcessor(
        size={"height": 64, "width": 64}, size_divisor=32, ignore_index=255
    ).save_pretrained(out)
    return out
