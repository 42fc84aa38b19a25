"""The generation engine against the pre-engine loop and transformers' own generate."""

import pytest
import torch

from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
from t2ir1.rollout.sampling import filter_logits
from t2ir1.testing import legacy_rollout as legacy


@pytest.mark.parametrize("cfg_weight", [1.0, 5.0])
def test_greedy_image_tokens_equal_the_legacy_loop_and_transformers(tiny_policy, cfg_weight):
    prompts = ["a red cube left of a blue ball", "two green cups", "a photo of a dog"]
    ids, mask = tiny_policy.encode_image_prompts(prompts, [None] * len(prompts))
    engine = GenerationEngine(tiny_policy, SamplingOptions(cfg_weight=cfg_weight, image_temperature=0.0))
    ours = engine._image_chunk(ids, mask, 3, None, None, None)[0]
    assert torch.equal(ours, legacy.sample_image_tokens(tiny_policy, ids, mask, cfg_weight, 0.0))
    if cfg_weight != 1.0:
        theirs = tiny_policy.model.generate(
            input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False, guidance_scale=cfg_weight
        )
        assert torch.equal(ours, theirs)


def test_greedy_cot_equals_the_legacy_loop(tiny_policy):
    ids, mask = tiny_policy.encode_semantic_prompts(["a cat", "two red dogs on a bench"], "Describe {}.", "S")
    engine = GenerationEngine(tiny_policy, SamplingOptions(max_new_tokens=12, text_temperature=0.0))
    ours = engine.sample_cot(ids, mask, 2, None)
    theirs = legacy.sample_semantic_cot(tiny_policy, ids, mask, 2, 12, 0.0)
    assert torch.equal(ours["completion_ids"], theirs.completion_ids)
    assert torch.equal(ours["completion_mask"], theirs.completion_mask)


def test_top_k_keeps_the_k_largest_and_top_p_the_nucleus():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, True, False, True]]
    # softmax ~ [0.64, 0.09, 0.24, 0.03]: 0.64 + 0.24 reaches 0.8
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, True, False, True]]


def test_out_of_range_options_name_the_key():
    with pytest.raises(ValueError, match="cfg_weight"):
        SamplingOptions(cfg_weight=-3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingOptions(max_new_tokens=0)


def test_weights_are_fused_on_cpu_only_below_the_size_limit(tiny_policy, monkeypatch):
    """Small models run fused q/k/v and gate/up copies on CPU; above ``FUSE_MAX_BYTES`` (where the
    copy costs more than it saves) the layers' own weights are used, with the same samples."""
    from t2ir1.rollout import engine as engine_module
    from t2ir1.rollout.sampling import prompt_generators

    ids, mask = tiny_policy.encode_image_prompts(["two green cups", "a dog"], [None] * 2)

    def sample():
        engine = GenerationEngine(tiny_policy, SamplingOptions(cfg_weight=3.0))
        tokens, _, _ = engine.sample_images(ids, mask, 1, prompt_generators([7, 8]), decode=False)
        return engine.decoder.layers[0].qkv is not None, tokens

    fused, tokens_fused = sample()
    monkeypatch.setattr(engine_module, "FUSE_MAX_BYTES", 0)
    unfused, tokens_unfused = sample()
    assert fused and not unfused
    torch.testing.assert_close(tokens_unfused, tokens_fused)


def test_sampling_builds_no_autograd_graph_when_called_directly(tiny_policy):
    """``sample_cot`` / ``sample_images`` are entry points of their own (fidelity, benchmarks): with
    grad enabled and trainable weights they must not record a graph (at Janus-Pro-1B's size a
    recorded prefill kept every activation alive and cost 1.5x its time in page faults)."""
    from t2ir1.rollout.sampling import prompt_generators

    assert torch.is_grad_enabled() and any(p.requires_grad for p in tiny_policy.language_model.parameters())
    engine = GenerationEngine(tiny_policy, SamplingOptions(cfg_weight=3.0, max_new_tokens=4))
    ids, mask = tiny_policy.encode_image_prompts(["two green cups", "a dog"], [None] * 2)
    _, logp, _ = engine.sample_images(ids, mask, 1, prompt_generators([1, 2]), decode=False)
    ids, mask = tiny_policy.encode_semantic_prompts(["a cat"], "Describe {}.", "S")
    cot = engine.sample_cot(ids, mask, 2, prompt_generators([1]))
    assert logp.grad_fn is None and not logp.requires_grad
    assert cot["logp"].grad_fn is None and not cot["logp"].requires_grad


def test_a_prompt_prefilled_once_gives_its_rows_the_per_row_prefill(tiny_policy):
    """The G CoTs of a prompt share its prefill: keys, values and last states equal those of
    prefilling every row (left-padded prompts of different lengths, G = 3)."""
    from t2ir1.policy.logprobs import positions_from_mask
    from t2ir1.rollout.engine import _prefill_mask

    ids, mask = tiny_policy.encode_semantic_prompts(["a cat", "two red dogs on a green bench"], "Describe {}.", "S")
    assert not bool(mask.all())  # the shorter prompt is padded
    engine = GenerationEngine(tiny_policy, SamplingOptions())
    engine._refresh()
    d, group = engine.decoder, 3
    embed = tiny_policy.language_model.get_input_embeddings()
    table = d.rotary_table(64, torch.float32, "cpu")
    rows_ids, rows_mask = ids.repeat_interleave(group, 0), mask.repeat_interleave(group, 0)
    with torch.no_grad():
        per_row = d.new_cache(rows_ids.shape[0], ids.shape[1] + 4, torch.float32, "cpu")
        last_per_row = d.forward(
            embed(rows_ids), table[positions_from_mask(rows_mask)], per_row, 0, _prefill_mask(rows_mask)
        )[:, -1]
        shared = d.new_cache(rows_ids.shape[0], ids.shape[1] + 4, torch.float32, "cpu")
        last_shared = engine._prefill_shared(embed(ids), table[positions_from_mask(mask)], mask, group, shared)
    torch.testing.assert_close(last_shared, last_per_row, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared.keys, per_row.keys, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared.values, per_row.values, rtol=0, atol=1e-6)
