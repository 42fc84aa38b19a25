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
    KV cache, text rollout (bf16)           2 * L * (B*G * (P_sem + C_max) + B * P_sem) * 2 * n_kv * d_head
                                            (B * P_sem: each prompt prefilled once, copied to its G rows; G >= 2)
    activations, log-prob pass (bf16)       no AC: 2 * L * R * T * (11 H + 4 I);  AC: 2 * L * R * T * H + one layer's
                                            (unsharded, no AC: the semantic prompt counted once per prompt,
                                            B * P_sem tokens, plus its K/V per row, R * P_sem * 2 * n_kv * d_head)
    log-prob logits chunk (fp32)            4 * chunk_logits (algo.logprob_chunk_logits)
    each reward member (its dtype)          bytes_per_param * params

with ``W`` ranks, ``B`` prompts per rank, ``G`` samples per prompt, ``R = B * G`` rows of the
log-prob pass, ``T`` tokens per row (prompt + CoT + 576 image tokens). The activation factor
``11 H + 4 I`` (:func:`saved_per_token`, full fine-tuning, ``n_kv * d_head = H``) counts the tensors a
LLaMA layer saves for backward (norm inputs and outputs, the rotated query, keys and values, the
attention output, o_proj input; gate, act(gate), up and their product in the MLP): an estimate,
checked against a measured CPU step of the tiny config (``tests/scale/test_memory_plan.py``).
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
    """The sizes and settings of one step on one rank (paper: 8 ranks x 1 prompt x 8 samples, FSDP2,
    bf16 compute over fp32 master weights, AdamW). :func:`shape_from_config` reads them from a
    composed training config."""

    world_size: int = 8
    prompts_per_rank: int = 1
    group_size: int = 8
    images_per_cot: int = 1
    image_tokens: int = 576
    image_prompt_tokens: int = 128
    semantic_prompt_tokens: int = 160
    max_cot_tokens: int = 1024
    levels: tuple[str, ...] = ("semantic", "token")
    # rollouts sample a CoT (None: when the semantic level is trained; algo.use_cot)
    use_cot: bool | None = None
    logprob_chunk_logits: int = LOGPROB_CHUNK_LOGITS
    activation_checkpointing: bool = False
    beta: float = 0.01
    rewards: dict[str, tuple[float, int]] = field(default_factory=lambda: dict(REWARD_MEMBERS))
    # FSDP2 shards parameters, gradients and optimiser state over the ranks (DDP / one device: replicated)
    sharded: bool = True
    # bytes per element: trained parameters as stored and stepped (FSDP master_dtype, else model.dtype),
    # the model's stored dtype (frozen parts, reference, LoRA base), and the compute dtype
    # (FSDP param_dtype, else model.dtype: activations, KV caches, gathered layers)
    master_bytes: int = 4
    model_bytes: int = 2
    compute_bytes: int = 2
    # optimiser state tensors per trained parameter (AdamW: exp_avg and exp_avg_sq), in master dtype
    optimizer_states: int = 2
    # LoRA rank (None: full fine-tuning) and the adapted Linear layers of each decoder layer
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # FSDP2 cpu_offload: sharded parameters, gradients and optimiser state live in host memory
    cpu_offload: bool = False
    # image rows per generation chunk (rollout.chunk_rows; None: all rows at once)
    rollout_chunk_rows: int | None = None
    # CFG doubles the image rows (1 at cfg_weight = 1)
    cfg_rows: int = 2

    @property
    def rows(self) -> int:
        """Log-prob rows per rank and micro-batch: ``B * G * k``."""
        return self.prompts_per_rank * self.group_size * self.images_per_cot


def lora_parameter_count(config: JanusConfig, rank: int, targets: tuple[str, ...]) -> int:
    """Adapter parameters of LoRA rank ``rank`` on ``targets`` of every decoder layer: ``r (in + out)`` each."""
    text = config.text_config
    hidden, inter = text.hidden_size, text.intermediate_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    shapes = {
        "q_proj": (hidden, text.num_attention_heads * head_dim),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (text.num_attention_heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"memory plan: LoRA targets {unknown} are not Linear layers of a LLaMA decoder layer {list(shapes)}")
    return text.num_hidden_layers * sum(rank * sum(shapes[t]) for t in targets)


def saved_per_token(hidden: int, inter: int, kv: int, trained_norms: bool = True) -> int:
    """Elements a LLaMA decoder layer saves for backward per token (SDPA keeps no T x T scores).

    Each RMSNorm keeps its input and its output (``2 H``), plus the normalised input before the
    weight when the weight trains (autograd saves a factor only for an operand that needs its
    gradient: not under LoRA, whose norms are frozen). Attention keeps the rotated query and the
    output (``2 H``), the rotated keys and the values (``2 kv``, ``kv = n_kv * d_head``), o_proj its
    input (``H``); the MLP keeps gate, act(gate), up and their product (``4 I``). Full fine-tuning of
    a model with ``kv = H``: ``11 H + 4 I``.
    """
    norms = 2 * (3 if trained_norms else 2) * hidden
    return norms + 3 * hidden + 2 * kv + 4 * inter


def memory_plan(config: JanusConfig, shape: StepShape) -> dict[str, float]:
    """Bytes per rank of every component; key ``total`` sums what is alive at the peak.

    Rollout KV caches and log-prob activations are not alive at the same time; the total
    counts the larger of the two phases. Activations count the text and image log-prob passes
    as one pass over all their tokens (they are alive together until the backward).
    Keys start with the component they belong to: ``weights``, ``optimiser``, ``gradients``,
    ``activations``, ``KV cache``, ``reward``, and ``host`` (CPU offload: not on the GPU, not in
    ``total``).
    """
    text = config.text_config
    counts = parameter_counts(config)
    language = counts["language_model"] + counts["lm_head"]
    frozen = sum(counts[name] for name in FROZEN)
    hidden, layers, inter = text.hidden_size, text.num_hidden_layers, text.intermediate_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    kv_width = 2 * text.num_key_value_heads * head_dim  # K and V per token per layer
    rows = shape.rows
    shards = shape.world_size if shape.sharded else 1
    if shape.lora_rank is None:
        trained, base = language, 0
    else:  # adapters train (fp32, peft); the base language model + lm_head are frozen
        trained, base = lora_parameter_count(config, shape.lora_rank, shape.lora_targets), language
    master = shape.master_bytes * trained / shards
    plan = {
        "weights: trained (master copy)": master,
        "weights: frozen LoRA base (language model + lm_head)": (
            (shape.master_bytes if shape.sharded and shape.master_bytes > shape.model_bytes else shape.model_bytes)
            * base / shards
        ),
        "weights: reference (frozen copy)": (
            shape.model_bytes * language / shards if shape.beta > 0 and shape.lora_rank is None else 0.0
        ),
        "weights: frozen Janus parts (replicated)": shape.model_bytes * frozen,
        "weights: gathered layers in flight (FSDP)": (
            shape.compute_bytes * (2 * counts["decoder_layer"] + text.vocab_size * hidden) if shape.sharded else 0.0
        ),
        "optimiser state": shape.optimizer_states * master,
        "gradients": master,
    }
    host = 0.0
    if shape.cpu_offload:  # FSDP2's CPUOffloadPolicy: sharded parameters, gradients, optimiser state
        for key in ("weights: trained (master copy)", "weights: frozen LoRA base (language model + lm_head)",
                    "weights: reference (frozen copy)", "optimiser state", "gradients"):
            host += plan[key]
            plan[key] = 0.0
    image_rows = rows if shape.rollout_chunk_rows is None else min(rows, shape.rollout_chunk_rows)
    image_kv = shape.compute_bytes * layers * (shape.cfg_rows * image_rows) * (
        shape.image_prompt_tokens + shape.image_tokens) * kv_width
    use_cot = shape.use_cot if shape.use_cot is not None else "semantic" in shape.levels
    text_rows = shape.prompts_per_rank * shape.group_size
    # every row's cache, plus the prompts' own while the engine prefills each prompt once for its G rows
    text_kv_rows = text_rows * (shape.semantic_prompt_tokens + shape.max_cot_tokens)
    if shape.group_size >= 2:
        text_kv_rows += shape.prompts_per_rank * shape.semantic_prompt_tokens
    text_kv = shape.compute_bytes * layers * text_kv_rows * kv_width if use_cot else 0.0
    tokens = (shape.image_prompt_tokens + shape.image_tokens) if "token" in shape.levels else 0
    # the semantic pass runs each distinct prompt once for its G * k rows and keeps the prompt's
    # keys/values expanded to every row (t2ir1.policy.logprobs.text_logprobs), unless the model is
    # FSDP-sharded or activation checkpointing recomputes the layers: then prompt + CoT run as one
    # sequence per row
    shared_prompts = (
        "semantic" in shape.levels
        and not shape.sharded
        and not shape.activation_checkpointing
        and shape.group_size * shape.images_per_cot >= 2
    )
    if "semantic" in shape.levels:
        tokens += shape.max_cot_tokens if shared_prompts else shape.semantic_prompt_tokens + shape.max_cot_tokens
    per_token = saved_per_token(hidden, inter, kv_width // 2, trained_norms=shape.lora_rank is None)
    if shape.lora_rank is not None:  # each adapter keeps its down-projection (r per token)
        per_token += shape.lora_rank * len(shape.lora_targets)
    if shape.activation_checkpointing:
        activations = shape.compute_bytes * rows * tokens * (layers * hidden + per_token)
    else:
        activations = shape.compute_bytes * layers * rows * tokens * per_token
    if shared_prompts:
        activations += shape.compute_bytes * layers * (
            shape.prompts_per_rank * shape.semantic_prompt_tokens * per_token  # the distinct prompts' pass
            + rows * shape.semantic_prompt_tokens * kv_width  # their keys/values, one copy per row
        )
    # the heads hold at most `chunk_logits` fp32 logits at once (algo.logprob_chunk_logits)
    logits = 4 * min(shape.logprob_chunk_logits, rows * tokens * text.vocab_size)
    plan["KV cache: image rollout (CFG rows)"] = image_kv
    plan["KV cache: text rollout"] = text_kv
    plan["activations: log-prob pass"] = activations
    plan["activations: log-prob logits chunk"] = logits
    for name, (params, width) in shape.rewards.items():
        plan[f"reward: {name}"] = params * width
    resident = sum(v for k, v in plan.items() if not k.startswith(("KV", "activations")))
    plan["host: CPU offload (not on the GPU)"] = host
    plan["total"] = resident + max(image_kv, text_kv, activations + logits)
    return plan


# ----------------------------------------------------------------------------- composed configs
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, None: None}


def model_config(model_node) -> JanusConfig:
    """The ``JanusConfig`` a ``model`` node loads (no weights): the hub presets by name, local
    directories by their config.json, the tiny model by its spec."""
    from pathlib import Path

    node = dict(model_node)
    target = str(node.get("_target_", ""))
    if target.endswith("load_tiny_policy"):
        from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint

        spec = {k: tuple(v) if isinstance(v, list) else v for k, v in (node.get("spec") or {}).items()}
        return JanusConfig.from_pretrained(tiny_checkpoint(node["cache_dir"], TinyJanusSpec(**spec)))
    if target.endswith("random_janus_policy"):
        return janus_config(node.get("preset", "janus_pro_1b"))
    if target.endswith("shapeworld.load_policy"):
        from t2ir1.shapeworld import checkpoint_path

        return JanusConfig.from_pretrained(node.get("name_or_path") or checkpoint_path())
    name = str(node.get("name_or_path", ""))
    if (Path(name).expanduser() / "config.json").is_file():
        return JanusConfig.from_pretrained(name)
    for preset, tag in (("janus_pro_7b", "7b"), ("janus_pro_1b", "1b")):
        if tag in name.lower():
            return janus_config(preset)
    raise ValueError(
        f"memory plan: cannot tell the model size of model.name_or_path={name!r}; use a local directory "
        "with a config.json or a name containing 1B / 7B"
    )


def _world_size(trainer) -> int:
    devices = trainer.get("devices") or 1
    if isinstance(devices, int | float):
        count = int(devices)
    elif isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif isinstance(devices, list | tuple) or hasattr(devices, "__len__") and not isinstance(devices, str):
        count = len(devices)
    else:
        raise ValueError(f"memory plan: trainer.devices={devices!r}; give a number of devices (the plan is per rank)")
    return count * int(trainer.get("num_nodes", 1) or 1)


def _reward_members(reward) -> dict[str, tuple[float, int]]:
    members = {}
    for key, member in (reward.get("members") or {}).items():
        if member is None:
            continue
        match = next((name for name in REWARD_MEMBERS if name.split()[0] == key), None)
        if match is None:
            continue  # pixel rewards (color, shapeworld) hold no model
        params, width = REWARD_MEMBERS[match]
        width = BYTES.get(member.get("dtype")) or width
        members[match] = (params, width)
    return members


def shape_from_config(cfg, janus: JanusConfig | None = None) -> StepShape:
    """The :class:`StepShape` of a composed training config (``python train.py --cfg job``)."""
    from omegaconf import OmegaConf

    # node by node: outside a Hydra run the output paths (${hydra:...}) do not resolve, and are not needed
    def node(key: str) -> dict:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            return {}
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    resolved = {key: node(key) for key in ("model", "algo", "data", "optimizer", "rollout", "reward")}
    resolved["trainer"] = {key: node(f"trainer.{key}") for key in ("devices", "num_nodes", "strategy")}
    model, algo, trainer = resolved["model"], resolved["algo"], resolved["trainer"]
    janus = janus or model_config(model)
    strategy = trainer.get("strategy")
    fsdp = isinstance(strategy, dict) and str(strategy.get("_target_", "")).endswith("FSDP2Strategy")
    model_bytes = BYTES[model.get("dtype", "float32")]
    master = BYTES.get(strategy.get("master_dtype")) if fsdp else None
    compute = BYTES.get(strategy.get("param_dtype")) if fsdp else None
    lora = model.get("lora") or {}
    optimizer = str(resolved.get("optimizer", {}).get("_target_", "torch.optim.AdamW"))
    if optimizer.endswith(("AdamW", "Adam")):
        states = 2
    elif optimizer.endswith("SGD"):
        states = 1 if resolved["optimizer"].get("momentum") else 0
    else:
        log.warning("memory plan: optimiser %s is counted as AdamW (two state tensors per parameter)", optimizer)
        states = 2
    rollout = resolved.get("rollout") or {}
    data = resolved.get("data", {})
    prompt_cap = data.get("max_prompt_tokens")
    defaults = StepShape()
    return StepShape(
        world_size=_world_size(trainer),
        prompts_per_rank=int(data.get("batch_size", 1)),
        group_size=int(algo.get("group_size", 8)),
        images_per_cot=int(algo.get("new_generations_image", 1)),
        image_tokens=janus.vision_config.num_image_tokens,
        image_prompt_tokens=min(defaults.image_prompt_tokens, prompt_cap or defaults.image_prompt_tokens),
        semantic_prompt_tokens=min(defaults.semantic_prompt_tokens, prompt_cap or defaults.semantic_prompt_tokens),
        max_cot_tokens=int(algo.get("max_new_tokens", 1024)),
        levels=tuple(algo.get("levels", ("semantic", "token"))),
        use_cot=algo.get("use_cot"),
        logprob_chunk_logits=int(algo.get("logprob_chunk_logits", LOGPROB_CHUNK_LOGITS)),
        activation_checkpointing=bool(fsdp and strategy.get("activation_checkpointing")),
        beta=float(algo.get("beta", 0.01)),
        rewards=_reward_members(resolved.get("reward") or {}),
        sharded=fsdp,
        master_bytes=master or model_bytes,
        model_bytes=model_bytes,
        compute_bytes=compute or model_bytes,
        optimizer_states=states,
        lora_rank=lora.get("r"),
        lora_targets=tuple(lora.get("target_modules") or StepShape.lora_targets),
        cpu_offload=bool(fsdp and strategy.get("cpu_offload")),
        rollout_chunk_rows=rollout.get("chunk_rows"),
        cfg_rows=1 if float(algo.get("cfg_weight", 5.0)) == 1.0 else 2,
    )


def plan_from_config(cfg) -> dict[str, float]:
    """Bytes per rank of the composed training config ``cfg`` (see :func:`memory_plan`)."""
    janus = model_config(_model_node(cfg))
    return memory_plan(janus, shape_from_config(cfg, janus))


def _model_node(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.model, resolve=True)


def live_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def cpu_peak_bytes(fn):
    """``(peak, result)``: the most CPU tensor bytes ``fn()`` held at once beyond what was allocated before.

    Measured, not estimated: PyTorch's profiler records every allocation and free of its CPU
    allocator (``profile_memory=True``); the running sum of those events, in time order, is the
    bytes alive, and its maximum the peak. Python objects and freed-but-cached memory are not
    tensors and are not counted (as ``torch.cuda.max_memory_allocated`` counts tensors only).
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []

    def walk(node) -> None:
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    alive = peak = 0
    for _, size in sorted(events):
        alive += size
        peak = max(peak, alive)
    return peak, result


def compose_train_config(overrides: list[str]):
    """The training config ``train.py`` would run with ``overrides`` (Hydra's compose API)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose(config_name="train", overrides=list(overrides))


def render_table(plans: dict[str, dict[str, float]]) -> str:
    """Markdown table, GiB per GPU, one column per plan."""
    names = list(plans)
    rows = ["| item | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in next(iter(plans.values())):
        rows.append(f"| {key} | " + " | ".join(f"{plans[n][key] / GIB:.2f}" for n in names) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    """``python -m t2ir1.scale.memory experiment=t2i_r1_40gb [key=value ...]``: the plan of that
    training config (GiB per rank). Without overrides: the 1B and 7B presets with and without
    activation checkpointing, at the paper's step (the table of experiments/memory_plan.md)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if overrides:
        cfg = compose_train_config(overrides)
        table = render_table({" ".join(overrides): plan_from_config(cfg)})
        log.info("%s", table)
        return table
    parser = argparse.ArgumentParser(
        description="Per-GPU memory plan of BiCoT-GRPO (GiB). Pass train.py overrides "
        "(experiment=t2i_r1_40gb ...) for the plan of that config."
    )
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
    log.info("%s", table)
    return table


if __name__ == "__main__":
    main()
