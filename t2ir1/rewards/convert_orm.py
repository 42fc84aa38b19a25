"""Convert a LLaVA-NeXT-layout LLaVA-OneVision checkpoint (e.g. ``CaraJ/ORM-T2I-R1``) to transformers.

Usage::

    python -m t2ir1.rewards.convert_orm SRC DST [--vision-num-heads 16] [--shard-size-gb 5]

``SRC`` is a local folder holding the LLaVA-NeXT ``config.json`` (Qwen2 fields plus
``mm_*`` fields), ``*.safetensors`` or ``pytorch_model*.bin`` weights and the Qwen2
tokenizer. ``DST`` receives a ``LlavaOnevisionForConditionalGeneration`` checkpoint
(config, sharded safetensors), the tokenizer with ``<image>``/``<video>`` tokens and
a SigLIP image processor, ready for :class:`t2ir1.rewards.orm.OutcomeRewardModel`.

Key mapping (LLaVA-NeXT -> transformers):

==============================================  =============================================
``model.vision_tower.vision_tower.vision_model.*``  ``model.vision_tower.*`` (transformers 5; 4.x: ``.vision_model.*``)
``model.mm_projector.0.*`` / ``.2.*``               ``model.multi_modal_projector.linear_1/2.*``
``model.image_newline``                             ``model.image_newline``
``model.{embed_tokens,layers,norm}.*``              ``model.language_model.*``
``lm_head.*``                                       ``lm_head.*``
==============================================  =============================================

The SigLIP pooling head (``...vision_model.head.*``) is dropped: LLaVA-OneVision
reads the last kept layer's hidden states, never the pooled output. The vision
config is read off the weight shapes (the LLaVA-NeXT config only names the tower);
the number of attention heads cannot be, hence ``--vision-num-heads`` (16 for
SigLIP-so400m). Weights are never instantiated into a model, so converting the 8B
judge needs about its size in CPU memory, not twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

VISION_SRC = "model.vision_tower.vision_tower.vision_model."
VISION_DST = "model.vision_tower.vision_model."
PROJECTOR = {
    "model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
    "model.mm_projector.2.": "model.multi_modal_projector.linear_2.",
}
QWEN2_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
)
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)


class ConversionError(ValueError):
    """The source folder is not a LLaVA-NeXT checkpoint this converter understands."""


def convert_key(key: str) -> str | None:
    """The transformers name of a LLaVA-NeXT key; ``None`` for keys that are dropped."""
    if key.startswith(VISION_SRC):
        rest = key[len(VISION_SRC) :]
        return None if rest.startswith("head.") else VISION_DST + rest
    for source, target in PROJECTOR.items():
        if key.startswith(source):
            return target + key[len(source) :]
    if key == "model.image_newline":
        return key
    if key.startswith("lm_head."):
        return key
    if key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")):
        return "model.language_model." + key[len("model.") :]
    if key.endswith(".inv_freq"):
        return None
    raise ConversionError(f"unknown key {key!r}: not part of the LLaVA-NeXT LLaVA-OneVision layout")


def load_source_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``src`` (safetensors preferred, else ``pytorch_model*.bin``)."""
    files = sorted(src.glob("*.safetensors"))
    state_dict: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            state_dict.update(load_file(file))
    else:
        files = sorted(src.glob("pytorch_model*.bin"))
        for file in files:
            state_dict.update(torch.load(file, map_location="cpu", weights_only=True))
    if not files:
        raise ConversionError(f"{src}: no *.safetensors or pytorch_model*.bin weights found")
    return state_dict


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key (see the module table); dropped keys are logged."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = convert_key(key)
        if new_key is None:
            log.info("dropping %s", key)
            continue
        converted[new_key] = value
    return converted


def vision_config_from_weights(state_dict: dict[str, torch.Tensor], num_heads: int) -> dict:
    """SigLIP vision config read off the converted weight shapes."""
    prefix = VISION_DST
    patch = state_dict.get(prefix + "embeddings.patch_embedding.weight")
    positions = state_dict.get(prefix + "embeddings.position_embedding.weight")
    if patch is None or positions is None:
        raise ConversionError(
            "no SigLIP patch/position embeddings under model.vision_tower.vision_tower.vision_model"
        )
    hidden_size, _, patch_size, _ = patch.shape
    grid = math.isqrt(positions.shape[0])
    layer_ids = {
        int(m.group(1))
        for k in state_dict
        if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))
    }
    if hidden_size % num_heads:
        raise ConversionError(
            f"vision hidden size {hidden_size} is not divisible by --vision-num-heads {num_heads}"
        )
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": int(hidden_size),
        "intermediate_size": int(state_dict[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": len(layer_ids),
        "num_attention_heads": num_heads,
        "patch_size": int(patch_size),
        "image_size": int(grid * patch_size),
        "vision_use_head": False,
    }


def match_installed_vision_layout(
    state_dict: dict[str, torch.Tensor], vision_config: dict
) -> dict[str, torch.Tensor]:
    """Rename vision keys to the installed transformers layout of the SigLIP tower.

    transformers 4.x nests the tower (``vision_tower.vision_model.*``); 5.x keeps it flat
    (``vision_tower.*``). The layout is read off an empty (meta-device) tower.
    """
    from transformers import AutoModel, SiglipVisionConfig

    fields = {k: v for k, v in vision_config.items() if k != "model_type"}
    with torch.device("meta"):
        tower = AutoModel.from_config(SiglipVisionConfig(**fields))
    if any(key.startswith("vision_model.") for key in tower.state_dict()):
        return state_dict
    flat = "model.vision_tower."
    return {
        (flat + k[len(VISION_DST) :] if k.startswith(VISION_DST) else k): v for k, v in state_dict.items()
    }


def _extend_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean row, so new tokens start at the average embedding."""
    extra = weight.float().mean(dim=0, keepdim=True).to(weight.dtype).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)


def save_sharded(state_dict: dict[str, torch.Tensor], dst: Path, shard_bytes: int) -> None:
    """``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + index, as transformers writes them."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state_dict.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value.contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], dst / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, dst / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state_dict.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


def convert(src: str | Path, dst: str | Path, vision_num_heads: int = 16, shard_size_gb: float = 5.0) -> Path:
    """Convert ``src`` (LLaVA-NeXT layout) into a transformers LLaVA-OneVision folder ``dst``."""
    from transformers import AutoTokenizer, LlavaOnevisionConfig, SiglipImageProcessor

    src, dst = Path(src), Path(dst)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{src}: no config.json; SRC must be a downloaded LLaVA-NeXT checkpoint folder")
    source_config = json.loads(config_path.read_text())
    missing = [
        f
        for f in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if f not in source_config
    ]
    if missing:
        raise ConversionError(f"{config_path}: missing Qwen2 fields {missing}")

    state_dict = convert_state_dict(load_source_state_dict(src))
    vision_config = {
        **vision_config_from_weights(state_dict, vision_num_heads),
        **source_config.get("vision_config", {}),
    }
    state_dict = match_installed_vision_layout(state_dict, vision_config)

    tokenizer = AutoTokenizer.from_pretrained(src)
    new_tokens = [t for t in ("<image>", "<video>") if t not in tokenizer.get_vocab()]
    if new_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": new_tokens})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    video_token_id = tokenizer.convert_tokens_to_ids("<video>")

    text_config = {"model_type": "qwen2", **{k: source_config[k] for k in QWEN2_FIELDS if k in source_config}}
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in state_dict and state_dict[key].shape[0] < len(tokenizer):
            log.info(
                "extending %s from %d to %d rows for the new tokens",
                key,
                state_dict[key].shape[0],
                len(tokenizer),
            )
            state_dict[key] = _extend_rows(state_dict[key], len(tokenizer))
    text_config["vocab_size"] = int(state_dict["model.language_model.embed_tokens.weight"].shape[0])

    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=source_config.get("image_grid_pinpoints"),
        tie_word_embeddings=bool(source_config.get("tie_word_embeddings", False)),
    )
    if "lm_head.weight" not in state_dict and not config.tie_word_embeddings:
        raise ConversionError(f"{src}: no lm_head.weight and tie_word_embeddings is false")

    dst.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(dst)
    save_sharded(state_dict, dst, int(shard_size_gb * 1024**3))
    tokenizer.save_pretrained(dst)
    size = vision_config["image_size"]
    SiglipImageProcessor(
        size={"height": size, "width": size},
        image_mean=list(SIGLIP_MEAN_STD),
        image_std=list(SIGLIP_MEAN_STD),
    ).save_pretrained(dst)
    log.info("converted %s -> %s (%d tensors)", src, dst, len(state_dict))
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="local folder of the LLaVA-NeXT-layout checkpoint")
    parser.add_argument("dst", help="output folder for the transformers checkpoint")
    parser.add_argument(
        "--vision-num-heads", type=int, default=16, help="SigLIP attention heads (so400m: 16)"
    )
    parser.add_argument("--shard-size-gb", type=float, default=5.0, help="maximum safetensors shard size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    convert(args.src, args.dst, args.vision_num_heads, args.shard_size_gb)


if __name__ == "__main__":
    main()
