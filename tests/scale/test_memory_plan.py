"""The memory plan: exact parameter counts from a JanusConfig, formulas checked by hand."""

from __future__ import annotations

import pytest
from transformers import JanusConfig

from t2ir1.scale.memory import GIB, PRESETS, StepShape, janus_config, main, memory_plan, parameter_counts


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
    assert plan["params (fp32 master, sharded)"] == pytest.approx(4 * trained / 4)
    assert plan["AdamW state (fp32, sharded)"] == pytest.approx(8 * trained / 4)
    # image KV: 2 bytes * 24 layers * 16 CFG rows * (128 + 576) tokens * 2 * 2048 = 2,214,592,512
    assert plan["KV cache, image rollout (CFG rows)"] == 2 * 24 * 16 * 704 * 2 * 2048
    assert (
        memory_plan(config, StepShape(world_size=4, rewards={}, beta=0.0))["reference (bf16, sharded)"] == 0.0
    )
    # more ranks, fewer sharded bytes per rank
    assert memory_plan(config, StepShape(world_size=8, rewards={}))["total"] < plan["total"]


def test_seven_b_fits_80gb_only_with_activation_checkpointing():
    config = janus_config("janus_pro_7b")
    without = memory_plan(config, StepShape())["total"] / GIB
    with_ac = memory_plan(config, StepShape(activation_checkpointing=True))["total"] / GIB
    assert without > 80 > with_ac


def test_cli_renders_a_table_with_all_four_columns():
    table = main([])
    header = table.splitlines()[0]
    assert all(name in header for name in ("janus_pro_1b", "janus_pro_1b +AC", "janus_pro_7b +AC"))
    assert "| total |" in table
