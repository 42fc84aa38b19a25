"""The memory plan: exact parameter counts from a JanusConfig, formulas checked by hand, the
composed config read into the plan, and the plan checked against a measured CPU step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import JanusConfig

from t2ir1.scale.memory import (
    GIB,
    PRESETS,
    StepShape,
    compose_train_config,
    cpu_peak_bytes,
    janus_config,
    live_bytes,
    lora_parameter_count,
    main,
    memory_plan,
    model_config,
    parameter_counts,
    shape_from_config,
)


def test_decoder_layer_count_matches_the_llama_formula():
    # LLaMA layer, n_kv = n_heads: q, k, v, o (4 H^2) + gate, up, down (3 H I) + two RMSNorms (2 H)
    # Janus-Pro-7B: 4 * 4096^2 + 3 * 4096 * 11008 + 2 * 4096 = 202,383,360
    counts = parameter_counts(janus_config("janus_pro_7b"))
    assert counts["decoder_layer"] == 202_383_360
    assert counts["lm_head"] == 102_400 * 4096
    # 30 layers + embeddings (V H) + final norm (H)
    assert counts["language_model"] == 30 * 202_383_360 + 102_400 * 4096 + 4096


def test_presets_build_the_published_text_decoders():
    for name, decoder in PRESETS.items():
        config = janus_config(name)
        assert isinstance(config, JanusConfig)
        assert {key: getattr(config.text_config, key) for key in decoder} == decoder, name
    # Janus-Pro-1B's decoder (DeepSeek-LLM 1.5B), worked by hand from its published config.json:
    # layer 4 * 2048^2 + 3 * 2048 * 5632 + 2 * 2048 = 51,384,320; x 24 = 1,233,223,680;
    # + embeddings 102,400 * 2048 = 209,715,200; + final norm 2048 -> 1,442,940,928
    assert parameter_counts(janus_config("janus_pro_1b"))["language_model"] == 1_442_940_928
    with pytest.raises(ValueError, match="unknown preset 'janus_pro_3b'"):
        janus_config("janus_pro_3b")


def test_plan_rows_follow_their_formulas():
    config = janus_config("janus_pro_1b")
    counts = parameter_counts(config)
    trained = counts["language_model"] + counts["lm_head"]
    shape = StepShape(world_size=4, rewards={})
    plan = memory_plan(config, shape)
    assert plan["weights: trained (master copy)"] == pytest.approx(4 * trained / 4)
    assert plan["optimiser state"] == pytest.approx(8 * trained / 4)
    assert plan["weights: reference (frozen copy)"] == pytest.approx(2 * trained / 4)
    # image KV: 2 bytes * 24 layers * 16 CFG rows * (128 + 576) tokens * 2 * 2048 = 2,214,592,512
    assert plan["KV cache: image rollout (CFG rows)"] == 2 * 24 * 16 * 704 * 2 * 2048
    # text KV: 8 CoT rows * (160 prompt + 1024 CoT tokens), plus the 1 prompt's 160 tokens the engine
    # prefills once before copying them to its 8 rows
    assert plan["KV cache: text rollout"] == 2 * 24 * (8 * 1184 + 160) * 2 * 2048
    # activations (FSDP: one sequence per row): 2 bytes * 24 layers * 8 rows * 1888 tokens * (11 * 2048 + 4 * 5632)
    per_token = 11 * 2048 + 4 * 5632
    assert plan["activations: log-prob pass"] == 2 * 24 * 8 * 1888 * per_token
    # one GPU, unsharded: 8 rows * (128 + 576 image + 1024 CoT tokens), the 1 distinct semantic prompt's
    # 160 tokens once, and its K/V (2 * 2048) for each of the 8 rows
    single = memory_plan(config, StepShape(world_size=1, sharded=False, rewards={}))
    assert single["activations: log-prob pass"] == 2 * 24 * (8 * 1728 * per_token + 160 * per_token + 8 * 160 * 2 * 2048)
    # with activation checkpointing every row runs its own prompt: 1888 tokens a row
    checkpointed = memory_plan(config, StepShape(world_size=1, sharded=False, rewards={}, activation_checkpointing=True))
    assert checkpointed["activations: log-prob pass"] == 2 * 8 * 1888 * (24 * 2048 + per_token)
    assert memory_plan(config, StepShape(world_size=4, rewards={}, beta=0.0))["weights: reference (frozen copy)"] == 0.0
    # more ranks, fewer sharded bytes per rank
    assert memory_plan(config, StepShape(world_size=8, rewards={}))["total"] < plan["total"]


def test_lora_plan_drops_master_weights_optimiser_gradients_and_reference():
    config = janus_config("janus_pro_7b")
    full = memory_plan(config, StepShape(rewards={}))
    lora = memory_plan(config, StepShape(rewards={}, lora_rank=32))
    # 30 layers x 32 x (q, o: 2 * 4096 * 2 ... ): r (in + out) per adapted Linear
    per_layer = 32 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert lora_parameter_count(config, 32, StepShape.lora_targets) == 30 * per_layer
    assert lora["optimiser state"] == pytest.approx(8 * 30 * per_layer / 8)
    assert lora["weights: reference (frozen copy)"] == 0.0
    assert lora["total"] < full["total"] - 10 * GIB


def test_lora_count_equals_the_adapters_peft_builds(tiny_dir):
    from t2ir1.policy.janus import JanusPolicy

    policy = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True, lora={"r": 4, "target_modules": ["q_proj", "down_proj"]})
    built = sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
    assert lora_parameter_count(policy.model.config, 4, ("q_proj", "down_proj")) == built


def test_cpu_offload_moves_sharded_state_to_the_host():
    config = janus_config("janus_pro_7b")
    resident = memory_plan(config, StepShape(rewards={}))
    offloaded = memory_plan(config, StepShape(rewards={}, cpu_offload=True))
    moved = sum(resident[k] for k in ("weights: trained (master copy)", "optimiser state", "gradients",
                                      "weights: reference (frozen copy)"))
    assert offloaded["host: CPU offload (not on the GPU)"] == pytest.approx(moved)
    assert offloaded["total"] == pytest.approx(resident["total"] - moved)


def test_seven_b_fits_80gb_only_with_activation_checkpointing():
    config = janus_config("janus_pro_7b")
    without = memory_plan(config, StepShape())["total"] / GIB
    with_ac = memory_plan(config, StepShape(activation_checkpointing=True))["total"] / GIB
    assert without > 80 > with_ac


def test_cli_without_overrides_renders_the_preset_columns():
    table = main([])
    header = table.splitlines()[0]
    assert all(name in header for name in ("janus_pro_1b", "janus_pro_1b +AC", "janus_pro_7b +AC"))
    assert "| total |" in table


# ----------------------------------------------------------------------------- composed configs
def test_shape_reads_the_composed_config(tmp_path):
    paper = shape_from_config(compose_train_config(["experiment=t2i_r1"]))
    assert (paper.world_size, paper.prompts_per_rank, paper.group_size) == (8, 1, 8)
    assert (paper.master_bytes, paper.model_bytes, paper.compute_bytes) == (4, 2, 2)
    assert paper.sharded and paper.activation_checkpointing and paper.lora_rank is None and paper.beta == 0.01
    assert paper.rewards["hps (open_clip ViT-H-14)"] == (0.99e9, 4)  # the paper preset keeps HPS in float32
    small = shape_from_config(compose_train_config([
        "experiment=t2i_r1_40gb", "trainer.devices=4", "trainer.strategy.cpu_offload=true", "algo.beta=0.0",
        "optimizer._target_=torch.optim.SGD", "+optimizer.momentum=0.0", "rollout.chunk_rows=4", "algo.cfg_weight=1.0",
    ]))
    assert small.world_size == 4 and small.lora_rank == 32 and small.cpu_offload and small.beta == 0.0
    assert small.master_bytes == 2 and small.optimizer_states == 0 and small.rollout_chunk_rows == 4
    assert small.cfg_rows == 1
    tiny = shape_from_config(compose_train_config(["experiment=tiny", f"paths.cache_dir={tmp_path}"]))
    assert not tiny.sharded and tiny.world_size == 1 and tiny.model_bytes == 4 and tiny.rewards == {}


@pytest.mark.parametrize(
    ("experiment", "budget_gib"),
    [("t2i_r1_80gb", 80), ("t2i_r1_40gb", 40), ("t2i_r1_1b_80gb", 80), ("t2i_r1_1b_40gb", 40)],
)
def test_memory_presets_fit_their_card_with_g8_and_the_papers_batch(experiment, budget_gib):
    cfg = compose_train_config([f"experiment={experiment}"])
    shape = shape_from_config(cfg)
    assert shape.group_size == 8 and shape.prompts_per_rank == 1 and shape.world_size == 8
    assert cfg.trainer.accumulate_grad_batches * shape.world_size * shape.prompts_per_rank == 16
    config = model_config(cfg.model)
    total = memory_plan(config, shape)["total"] / GIB
    assert total < 0.9 * budget_gib  # 10% left for the allocator and the plan's error
    # without the preset's memory settings the step would not fit (the preset does something)
    plain = dataclasses.replace(shape, activation_checkpointing=False, lora_rank=None, master_bytes=4)
    if budget_gib == 40 or "1b" not in experiment:
        assert memory_plan(config, plain)["total"] / GIB > budget_gib


def _measured_tiny_step(overrides, cache_dir):
    """One BiCoT-GRPO step of the composed tiny config on CPU: (measured peak bytes, plan bytes)."""
    from t2ir1.data.records import PromptRecord
    from t2ir1.train import build_module

    cfg = compose_train_config(["experiment=tiny", f"paths.cache_dir={cache_dir}", *overrides])
    module = build_module(cfg)
    module.configure_model()
    module._setup_reward()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    records = [
        PromptRecord(prompt="a red cube left of a blue ball", task_type="position", nouns=("cube", "ball"), prompt_id="p0"),
        PromptRecord(prompt="two green cups", task_type="counting", nouns=("cup",), prompt_id="p1"),
    ]

    def step():
        rollout = module.step_record(module.rollout(records, step=0))
        loss, _ = module.update(rollout)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return rollout

    step()  # the optimiser state exists from the first step on: measure the second
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    resident = live_bytes([*module.parameters(), *module.buffers(), *state])
    peak, rollout = cpu_peak_bytes(step)
    g = rollout.generation
    janus = model_config(cfg.model)
    # the prompts' real token counts (the plan's defaults are the paper's prompt lengths)
    shape = dataclasses.replace(
        shape_from_config(cfg, janus),
        semantic_prompt_tokens=g.semantic_prompt_ids.shape[1],
        image_prompt_tokens=g.image_prompt_ids.shape[1],
        max_cot_tokens=g.completion_ids.shape[1],
    )
    return resident + peak, memory_plan(janus, shape)


@pytest.mark.parametrize("overrides", [[], ["model.lora.r=8"], ["algo.beta=0.0", "algo.max_new_tokens=64"]])
def test_plan_of_the_tiny_config_is_within_10_percent_of_a_measured_cpu_step(overrides, tmp_path):
    measured, plan = _measured_tiny_step(overrides, tmp_path)
    assert plan["total"] == pytest.approx(measured, rel=0.10), {k: round(v / 1e6, 3) for k, v in plan.items()}
    # LoRA: the plan knows there is no reference copy and a much smaller optimiser state
    if overrides == ["model.lora.r=8"]:
        assert plan["weights: reference (frozen copy)"] == 0.0 and plan["optimiser state"] < 0.2e6
