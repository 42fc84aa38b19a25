"""Tiny, randomly initialised variants of every reward member, saved the way real checkpoints are.

For tests, benchmarks and offline runs: every builder writes into a folder and
returns what the member's config needs; the members load them through their
ordinary loading code (``from_pretrained`` on a local folder, the HPS state-dict
layout, the LLaVA-NeXT layout for the ORM converter). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_HPS_ARCH = "t2ir1-tiny-hps"
TINY_HPS_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
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


ORM_CORPUS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "This image is generated by a prompt: a red cat left of a dog. Does this image accurately represent the prompt?",
    "Please answer yes or no without explanation.<|im_end|>\n<|im_start|>assistant\n",
    "yes",
    "no",
    "Yes",
    "No",
    "two dogs",
    "a blue dog and a cat",
    "something abstract",
]


def build_tiny_qwen_tokenizer():
    """A byte-level BPE tokenizer (Qwen2 style) trained on the ORM prompt words; yes/no are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(ORM_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )


def build_tiny_llava_next_checkpoint(folder: Path) -> Path:
    """A tiny LLaVA-OneVision (SigLIP 32 px / patch 8, 2-layer Qwen2) written in the LLaVA-NeXT layout.

    The weights come from a randomly initialised transformers model whose keys are
    renamed back to LLaVA-NeXT names; a SigLIP pooling-head tensor is added (the
    converter must drop it). The tokenizer lacks ``<image>`` (the converter adds it).
    """
    from safetensors.torch import save_file
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = build_tiny_qwen_tokenizer()
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
        "image_size": 32,
        "vision_use_head": False,
    }
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=0, video_token_index=1
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config)
    to_next = [
        # transformers 5 keeps the SigLIP tower flat (no ``vision_model.``); older versions nest it
        ("model.vision_tower.vision_model.", "model.vision_tower.vision_tower.vision_model."),
        ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
        ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("model.language_model.", "model."),
    ]
    state_dict = {}
    for key, value in model.state_dict().items():
        for hf_prefix, next_prefix in to_next:
            if key.startswith(hf_prefix):
                key = next_prefix + key[len(hf_prefix) :]
                break
        state_dict[key] = value.clone().contiguous()
    state_dict["model.vision_tower.vision_tower.vision_model.head.probe"] = torch.zeros(1, 1, 32)
    out = folder / "llava_next_orm"
    out.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, out / "model.safetensors")
    next_config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        **{k: v for k, v in text.items() if k != "model_type"},
        "hidden_act": "silu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "image_aspect_ratio": "anyres_max_9",
        "mm_patch_merge_type": "spatial_unpad",
        "image_grid_pinpoints": [[32, 32], [32, 64], [64, 32], [64, 64]],
    }
    (out / "config.json").write_text(json.dumps(next_config))
    tokenizer.save_pretrained(out)
    return out


def build_tiny_hps(folder: Path) -> dict[str, str]:
    """A tiny open_clip arch JSON + its random weights in the HPS layout; returns HPSReward kwargs."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{TINY_HPS_ARCH}.json"
    config_path.write_text(json.dumps(TINY_HPS_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    checkpoint = folder / "HPS_tiny.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return {"checkpoint": str(checkpoint), "arch": TINY_HPS_ARCH, "model_config_path": str(config_path)}


class BrightnessReward:
    """Mean pixel brightness of each image: a model-free reward that varies between samples, so
    group advantages are not all zero (tests of the training step)."""

    name = "brightness"

    def setup(self, device="cpu") -> None:
        pass

    def __call__(self, records, images):
        from t2ir1.rewards.base import RewardOutput

        scores = torch.tensor([sum(img.convert("L").getdata()) / (255.0 * img.width * img.height) for img in images])
        return RewardOutput(self.name, scores.float())
