import torch

from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
from t2ir1.rollout.sampling import prompt_generators, sample_from_logits, unconditional_ids


def image_tokens(policy, ids, mask, cfg_weight=5.0, temperature=1.0, generators=None, rows_per_prompt=1):
    """The engine's image tokens ``[N, T]`` for image prompts ``ids``/``mask``."""
    engine = GenerationEngine(policy, SamplingOptions(cfg_weight=cfg_weight, image_temperature=temperature))
    return engine.sample_images(ids, mask, rows_per_prompt, generators)[0]


def test_greedy_image_tokens_equal_transformers_generate(tiny_policy):
    prompts = ["a red cube left of a blue ball", "two green cups", "a photo of a dog"]
    for batch in (prompts[:1], prompts):
        ids, mask = tiny_policy.encode_image_prompts(batch, [None] * len(batch))
        ours = image_tokens(tiny_policy, ids, mask, cfg_weight=5.0, temperature=0.0)
        theirs = tiny_policy.model.generate(
            input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False, guidance_scale=5.0
        )
        assert torch.equal(ours, theirs)


def test_unconditional_row_keeps_only_bos_and_begin_of_image():
    ids = torch.tensor([[9, 9, 1, 5, 6, 7, 4]])  # pad=9, bos=1, boi=4
    assert unconditional_ids(ids, bos_id=1, boi_id=4, pad_id=9).tolist() == [[9, 9, 1, 9, 9, 9, 4]]


def test_semantic_cot_masks_after_the_first_eos(tiny_policy):
    eos = tiny_policy.eos_id
    # give lm_head a bias towards EOS (p ~ 1/3 a step) so rows stop early at different points
    old = tiny_policy.model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eos] = 5.5
    tiny_policy.model.lm_head = head
    ids, mask = tiny_policy.encode_semantic_prompts(["a cat", "a dog"], "Describe {}.", "S")
    engine = GenerationEngine(tiny_policy, SamplingOptions(max_new_tokens=12))
    rollout = engine.sample_cot(ids, mask, 4, prompt_generators([3, 4]))
    assert rollout["completion_ids"].shape[0] == 8 and rollout["prompt_ids"].shape[0] == 8
    for row_ids, row_mask in zip(rollout["completion_ids"], rollout["completion_mask"], strict=True):
        hits = (row_ids == eos).nonzero()
        if len(hits):
            first = hits[0, 0].item()
            assert row_mask[: first + 1].all(), "tokens up to and including EOS count"
            assert not row_mask[first + 1 :].any(), "tokens after EOS are masked"
            assert (row_ids[first + 1 :] == tiny_policy.pad_id).all()
        else:
            assert row_mask.all()
    assert (rollout["completion_mask"].sum(1) < 12).any(), "expected at least one early stop"


def test_a_prompts_samples_do_not_depend_on_its_batch(tiny_policy):
    ids, mask = tiny_policy.encode_image_prompts(["a red cube", "a much longer prompt about green cups"], [None, None])
    together = image_tokens(
        tiny_policy, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), generators=prompt_generators([11, 22]), rows_per_prompt=2
    )
    alone_ids, alone_mask = tiny_policy.encode_image_prompts(["a much longer prompt about green cups"], [None])
    alone = image_tokens(
        tiny_policy, alone_ids.repeat(2, 1), alone_mask.repeat(2, 1), generators=prompt_generators([22]), rows_per_prompt=2
    )
    assert torch.equal(together[2:], alone)


def test_gumbel_sampling_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(30000, 1)
    draws = sample_from_logits(logits, temperature=1.0, generators=prompt_generators([1, 2, 3]), rows_per_generator=10000)
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(logits[0], 0), atol=0.01)
    cold = sample_from_logits(logits[:100], temperature=0.0, generators=None, rows_per_generator=100)
    assert (cold == 2).all()


def test_cfg_weight_one_samples_from_the_conditional_rows_alone(tiny_policy):
    # w = 1 skips the unconditional rows: its greedy tokens must equal a cache-free greedy decoding of
    # the conditional rows (full forward per token), and differ from a real guidance weight
    from t2ir1.policy.logprobs import positions_from_mask

    batch = ["a red cube left of a blue ball", "two green cups"]
    ids, mask = tiny_policy.encode_image_prompts(batch, [None] * len(batch))
    ours = image_tokens(tiny_policy, ids, mask, cfg_weight=1.0, temperature=0.0)
    lm = tiny_policy.language_model
    embeds = lm.get_input_embeddings()(ids)
    full_mask = mask
    expected = []
    with torch.no_grad():
        for _ in range(tiny_policy.num_image_tokens):
            hidden = lm(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions_from_mask(full_mask))
            token = tiny_policy.generation_head(hidden.last_hidden_state[:, -1]).argmax(-1)
            expected.append(token)
            embeds = torch.cat([embeds, tiny_policy.embed_image_tokens(token[:, None])], dim=1)
            full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)
    assert torch.equal(ours, torch.stack(expected, dim=1))
    assert not torch.equal(ours, image_tokens(tiny_policy, ids, mask, cfg_weight=5.0, temperature=0.0))
