"""Builders of tiny, randomly initialised reward models saved the way users' checkpoints are.

Every builder writes into a folder and returns its path; the members load it through
their ordinary loading code (``from_pretrained`` on a local folder).
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["yes", "no", "red", "blue", "cat", "dog", "something", "abstract", "traffic", "light", "a", "?", "."]


def bert_vocab(words: list[str], bert_ids: bool = False) -> dict[str, int]:
    """A WordPiece vocab (token -> id); with ``bert_ids`` the special tokens sit at bert-base-uncased ids.

    GroundingDINO hard-codes the ids of [CLS] 101, [SEP] 102, "." 1012 and "?" 1029.
    """
    if bert_ids:
        size = 1040
        vocab = [f"[unused{i}]" for i in range(size)]
        fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
        for index, token in fixed.items():
            vocab[index] = token
        free = iter(i for i in range(1, size) if i not in fixed)
        for word in words:
            if word not in vocab:
                vocab[next(free)] = word
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[w for w in words if w not in ("[PAD]",)]]
    return {token: index for index, token in enumerate(vocab)}


def build_tiny_git(folder: Path) -> Path:
    """A 2-layer GIT (vision 32 px, patch 8) with a BERT tokenizer that knows the test words."""
    from transformers import BertTokenizerFast, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = BertTokenizerFast(vocab=bert_vocab(WORDS), do_lower_case=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = GitConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(0)
    model = GitForCausalLM(config).eval()
    out = folder / "git"
    model.save_pretrained(out)
    GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_gdino(folder: Path) -> Path:
    """A GroundingDINO with a 4-stage tiny Swin, a 1-layer BERT and 16 queries (64 px images)."""
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    tokenizer = BertTokenizerFast(vocab=bert_vocab(WORDS, bert_ids=True), do_lower_case=True)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    config = GroundingDinoConfig(
        backbone_config={
            "model_type": "swin",
            "image_size": 64,
            "patch_size": 4,
            "embed_dim": 8,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "window_size": 2,
            "out_indices": [2, 3, 4],
        },
        text_config={
            "model_type": "bert",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
        d_model=32,
        num_queries=16,
        encoder_layers=1,
        decoder_layers=2,  # 1 breaks the tied bbox_embed pattern of transformers
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
        num_feature_levels=3,
    )
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    out = folder / "gdino"
    model.save_pretrained(out)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
