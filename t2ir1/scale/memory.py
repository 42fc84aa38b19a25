"""Per-GPU memory plan of a BiCoT-GRPO step under FSDP2, computed from a ``JanusConfig``.

Parameter counts are exact: the model is built on the ``meta`` device (no memory, no
weights) and its parts are counted. The other rows are formulas (bytes per GPU)::

    trained params P_t = language model + lm_head;  frozen P_f = vision, aligner, VQ, generation parts
    params   (fp32 master, sharded)        4 * P_t / W
    grads    (fp32, sharded)                4 * P_t / W
    AdamW    (exp_avg + exp_avg_sq, fp32)   8 * P_t / W
    gathered (bf16, ~2 layers in flight)    2 * 2 * P_layer + 2 * (V * H)     (embeddings / lm_head unit)
    reference (bf16, sharded; 0 if beta=0)  2 * P_t / W
    frozen parts (bf16, replicated)         2 * P_f
    KV cache, image rollout (bf16)          2 * L * (B*G*2) * (P_img + 576) * 2 * n_kv * d_head
    KV cache, text rollout (bf16)           2 * L * (B*G)   * (P_sem + C_max) * 2 * n_kv * d_head
    activations, log-prob pass (bf16)       no AC: 2 * L * R * T * (14 H + 4 I);  AC: 2 * L * R * T * H + one layer's
    log-prob logits chunk (fp32)            4 * chunk_logits (algo.logprob_chunk_logits)
    each reward member (its dtype)          bytes_per_param * params

with ``W`` ranks, ``B`` prompts per rank, ``G`` samples per prompt, ``R = B * G`` rows of the
log-prob pass, ``T`` tokens per row (prompt + CoT + 576 image tokens). The activation factor
``14 H + 4 I`` counts the tensors a LLaMA layer saves for backward (norm inputs, q/k/v, the
attention output, o_proj input, residuals; gate, up, act and down inputs of the MLP): an
estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

import torch
from transformers import JanusConfig, JanusForConditionalGeneration

from t2ir1.policy.janus import FROZEN_PARTS
from t2ir1.policy.logprobs import LOGPROB_CHUNK_LOGITS

log = logging.getLogger(__name__)

GIB = 1024**3

# Trained vs frozen top-level parts of JanusModel: the policy's own list.
FROZEN = FROZEN_PARTS

# Janus-Pro text decoders (LLaMA layout) as published in the checkpoints' config.json.
PRESETS: dict[str, dict[str, int]] = {
    "janus_pro_1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "intermediate_size": 5632,
        "vocab_size": 102400,
    },
    "janus_pro_7b": {
        "hidden_size": 4096,
        "num_hidden_layers": 30,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 102400,
    },
}

# Reward members: (parameters, bytes per parameter); approximate sizes of the public checkpoints.
REWARD_MEMBERS: dict[str, tuple[float, int]] = {
    "hps (open_clip ViT-H-14)": (0.99e9, 2),
    "git (GIT-large VQAv2)": (0.39e9, 2),
    "gdino (GroundingDINO Swin-T)": (0.17e9, 4),
    "orm (LLaVA-OneVision-Qwen2-7B)": (8.0e9, 2),
}


def janus_config(preset: str) -> JanusConfig:
    """A ``JanusConfig`` with a preset text decoder and transformers' default vision / VQ parts."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    hidden = PRESETS[preset]["hidden_size"]
    return JanusConfig(
        text_config={"model_type": "llama", **PRESETS[preset]},
        # the aligners and generation embeddings project into the decoder's width
        vision_config={"projection_dim": hidden},
        vq_config={"projection_dim": hidden, "image_token_embed_dim": hidden},
    )


def parameter_counts(config: JanusConfig) -> dict[str, int]:
    """Exact parameter count of every top-level Janus part and ``lm_head`` (built on ``meta``)."""
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in model.model.named_children()}
    counts["lm_head"] = model.lm_head.weight.numel()
    counts["decoder_layer"] = sum(p.numel() for p in model.model.language_model.layers[0].parameters())
    return counts


@dataclass
class StepShape:
    """The sizes of one step on one rank (paper: 8 ranks x 1 prompt x 8 samples)."""

    world_size: int = 8
    prompts_per_rank: int = 1
    group_size: int = 8
    image_tokens: int = 576
    image_prompt_tokens: int = 128
    semantic_prompt_tokens: int = 160
    max_cot_tokens: int = 1024
    logprob_chunk_logits: int = LOGPROB_CHUNK_LOGITS
    activation_checkpointing: bool = False
    beta: float = 0.01
    rewards: dict[str, tuple[float, int]] = field(default_factory=lambda: dict(REWARD_MEMBERS))


def memory_plan(config: JanusConfig, shape: StepShape) -> dict[str, float]:
    """Bytes per GPU of every item of the module docstring; key ``total`` sums them.

    Rollout KV caches and log-prob activations are not alive at the same time; the total
    counts the larger of the two phases. Activations count the text and image log-prob passes
    as one pass over all their tokens (an upper bound: they run one after the other).
    """
    text = config.text_config
    counts = parameter_counts(config)
    trained = counts["language_model"] + counts["lm_head"]
    frozen = sum(counts[name] for name in FROZEN)
    hidden, layers, inter = text.hidden_size, text.num_hidden_layers, text.intermediate_size
    head_dim = hidden // text.num_attention_heads
    kv_width = 2 * text.num_key_value_heads * head_dim  # K and V per token per layer
    rows = shape.prompts_per_rank * shape.group_size
    w = shape.world_size
    plan = {
        "params (fp32 master, sharded)": 4 * trained / w,
        "grads (fp32, sharded)": 4 * trained / w,
        "AdamW state (fp32, sharded)": 8 * trained / w,
        "gathered bf16 units in flight": 2 * (2 * counts["decoder_layer"] + text.vocab_size * hidden),
        "reference (bf16, sharded)": (2 * trained / w) if shape.beta > 0 else 0.0,
        "frozen Janus parts (bf16, replicated)": 2 * frozen,
    }
    image_kv = 2 * layers * (2 * rows) * (shape.image_prompt_tokens + shape.image_tokens) * kv_width
    text_kv = 2 * layers * rows * (shape.semantic_prompt_tokens + shape.max_cot_tokens) * kv_width
    tokens = (
        shape.image_prompt_tokens + shape.semantic_prompt_tokens + shape.max_cot_tokens + shape.image_tokens
    )
    if shape.activation_checkpointing:
        activations = 2 * layers * rows * tokens * hidden + 2 * rows * tokens * (14 * hidden + 4 * inter)
    else:
        activations = 2 * layers * rows * tokens * (14 * hidden + 4 * inter)
    # the heads hold at most `chunk_logits` fp32 logits at once (algo.logprob_chunk_logits)
    logits = 4 * min(shape.logprob_chunk_logits, rows * tokens * text.vocab_size)
    plan["KV cache, image rollout (CFG rows)"] = image_kv
    plan["KV cache, text rollout"] = text_kv
    plan["activations, log-prob pass"] = activations
    plan["log-prob logits chunk"] = logits
    for name, (params, width) in shape.rewards.items():
        plan[f"reward: {name}"] = params * width
    resident = sum(v for k, v in plan.items() if not k.startswith(("KV", "activations", "log-prob")))
    plan["total"] = resident + max(image_kv, text_kv, activations + logits)
    return plan


def render_table(plans: dict[str, dict[str, float]]) -> str:
    """Markdown table, GiB per GPU, one column per plan."""
    names = list(plans)
    rows = ["| item | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in next(iter(plans.values())):
        rows.append(f"| {key} | " + " | ".join(f"{plans[n][key] / GIB:.2f}" for n in names) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Per-GPU memory plan of BiCoT-GRPO under FSDP2 (GiB).")
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--prompts-per-rank", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=8)
    args = parser.parse_args(argv)
    plans = {}
    for preset in PRESETS:
        config = janus_config(preset)
        for ac in (False, True):
            shape = StepShape(
                world_size=args.world_size,
                prompts_per_rank=args.prompts_per_rank,
                group_size=args.group_size,
                activation_checkpointing=ac,
            )
            plans[f"{preset}{' +AC' if ac else ''}"] = memory_plan(config, shape)
    table = render_table(plans)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%s", table)
    return table


if __name__ == "__main__":
    main()
