import dataclasses

import pytest
import torch

from t2ir1.policy.logprobs import image_logprobs, naive_logprobs, selective_logprobs, text_logprobs
from t2ir1.rollout.engine import GenerationEngine, SamplingOptions


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_selective_equals_naive_values_and_gradients(seed, chunk_size):
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 300))
    hidden = torch.randn(3, 11, 16, requires_grad=True)
    targets = torch.randint(0, 300, (3, 11))
    weights = torch.randn(3, 11)

    fast = selective_logprobs(hidden, targets, head, chunk_size=chunk_size)
    (fast * weights).sum().backward()
    fast_grads = [hidden.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    hidden.grad = None
    head.zero_grad()

    slow = naive_logprobs(hidden, targets, head)
    (slow * weights).sum().backward()
    slow_grads = [hidden.grad] + [p.grad for p in head.parameters()]

    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads, strict=False):
        assert torch.allclose(a, b, atol=1e-5)


def test_text_logprobs_match_the_models_own_logits(tiny_policy):
    prompt_ids, prompt_mask = tiny_policy.encode_semantic_prompts(["a red cube", "two cats"], "Say {}.", "S")
    completion = torch.randint(5, 400, (2, 6))
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    ours = text_logprobs(tiny_policy.language_model, tiny_policy.lm_head, prompt_ids, prompt_mask, completion, completion_mask, chunk_logits=5 * tiny_policy.lm_head.out_features)
    for row in range(2):  # unpadded single-row forward through the full model
        real = prompt_mask[row].bool()
        ids = torch.cat([prompt_ids[row, real], completion[row]])[None]
        logits = tiny_policy.model(input_ids=ids).logits[0, real.sum() - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1).gather(-1, completion[row, :, None]).squeeze(-1)
        keep = completion_mask[row].bool()
        assert torch.allclose(ours[row, keep], expected[keep], atol=1e-5)


def _grouped_text_batch(policy, group=4, length=6):
    """Two prompts x ``group`` CoTs of uneven length (the training batch's layout)."""
    prompt_ids, prompt_mask = policy.encode_semantic_prompts(["a red cube", "two small cats"], "Say {}.", "S")
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(group, 0), prompt_mask.repeat_interleave(group, 0)
    generator = torch.Generator().manual_seed(0)
    completion = torch.randint(5, 400, (2 * group, length), generator=generator)
    completion_mask = torch.ones_like(completion)
    for row in range(2 * group):
        completion_mask[row, 1 + row % length :] = 0
    return prompt_ids, prompt_mask, completion, completion_mask


def _text_logprobs_and_grads(policy, batch, share: bool, embed=None):
    import t2ir1.policy.logprobs as lp

    policy.zero_grad()
    sharing = lp._prompt_groups
    if not share:
        lp._prompt_groups = lambda *args: None
    try:
        logp = lp.text_logprobs(policy.language_model, policy.lm_head, *batch, embed=embed)
    finally:
        lp._prompt_groups = sharing
    (logp * batch[3]).sum().backward()
    return logp.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("length", [1, 6])
@pytest.mark.parametrize("own_embedding", [True, False])
def test_text_logprobs_share_each_prompt_across_its_cots_exactly(tiny_policy, length, own_embedding):
    """G CoTs of one prompt: the prompt runs once and its states serve all G (values and
    gradients as with G copies); the layers see the distinct prompts only."""
    batch = _grouped_text_batch(tiny_policy, length=length)
    embed = None if own_embedding else tiny_policy.language_model.get_input_embeddings()
    rows_seen = []
    hook = tiny_policy.language_model.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: rows_seen.append(kwargs.get("hidden_states", args[0] if args else None).shape[:2]),
        with_kwargs=True,
    )
    try:
        shared, shared_grads = _text_logprobs_and_grads(tiny_policy, batch, share=True, embed=embed)
    finally:
        hook.remove()
    full, full_grads = _text_logprobs_and_grads(tiny_policy, batch, share=False, embed=embed)
    n_prompt = batch[0].shape[1]
    # 2 distinct prompts of P positions, then 8 rows of the completion minus its last token
    assert rows_seen[0] == (2, n_prompt)
    assert rows_seen[1:] == ([(8, length - 1)] if length > 1 else [])
    keep = batch[3].bool()
    assert torch.allclose(shared[keep], full[keep], atol=1e-5)
    assert shared_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_text_logprobs_run_one_forward_when_layers_are_recomputed(tiny_policy):
    """Activation checkpointing would write the shared cache again in the backward pass: the
    prompts are then not shared, and the gradients stay those of the plain model."""
    import copy

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    batch = _grouped_text_batch(tiny_policy)
    expected, expected_grads = _text_logprobs_and_grads(tiny_policy, batch, share=False)
    wrapped = copy.deepcopy(tiny_policy)
    layers = wrapped.language_model.layers
    for index, layer in enumerate(layers):
        layers[index] = checkpoint_wrapper(layer, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    logp, grads = _text_logprobs_and_grads(wrapped, batch, share=True)
    keep = batch[3].bool()
    assert torch.allclose(logp[keep], expected[keep], atol=1e-5)
    grads = {name.replace("._checkpoint_wrapped_module", ""): grad for name, grad in grads.items()}
    assert grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_image_logprobs_equal_the_rollouts_step_by_step_logits(tiny_policy):
    """With cfg_weight=1 the sampling distribution is the conditional one, so the
    log-probs of one full forward must equal those of the KV-cached rollout."""
    ids, mask = tiny_policy.encode_image_prompts(["a red cube", "three small blue balls"], [None, None])
    engine = GenerationEngine(tiny_policy, SamplingOptions(cfg_weight=1.0, image_temperature=0.0))
    tokens = engine.sample_images(ids, mask, 1, None)[0]
    full = image_logprobs(
        tiny_policy.language_model, tiny_policy.generation_head, tiny_policy.embed_image_tokens, ids, mask, tokens, chunk_logits=8 * 256
    )
    # greedy tokens are each step's argmax: their log-prob is the max of the row's log-softmax
    stepwise = []
    for t in range(tokens.shape[1]):
        embeds = torch.cat([tiny_policy.language_model.get_input_embeddings()(ids), tiny_policy.embed_image_tokens(tokens[:, :t])], 1)
        m = torch.cat([mask, torch.ones(2, t, dtype=mask.dtype)], 1)
        from t2ir1.policy.logprobs import positions_from_mask

        h = tiny_policy.language_model(inputs_embeds=embeds, attention_mask=m, position_ids=positions_from_mask(m)).last_hidden_state[:, -1]
        stepwise.append(torch.log_softmax(tiny_policy.generation_head(h).float(), -1).max(-1).values)
    assert torch.allclose(full, torch.stack(stepwise, 1), atol=1e-5)


def _generation(n_prompts=1, group=2, k=3, text_len=4, image_len=5):
    from t2ir1.rollout.engine import Generation

    rows, texts = n_prompts * group * k, n_prompts * group
    image = torch.arange(rows * image_len).view(rows, image_len)
    completion = torch.arange(texts * text_len).view(texts, text_len) + 100
    completion_mask = torch.ones(texts, text_len, dtype=torch.long)
    completion_mask[1, 2:] = 0  # the second CoT ended after two tokens
    return Generation(
        ["p"] * n_prompts, group, k, ["c"] * rows, image, torch.ones_like(image), image, image.float(), [None] * rows,
        semantic_prompt_ids=torch.full((texts, 2), 7), semantic_prompt_mask=torch.ones(texts, 2, dtype=torch.long),
        completion_ids=completion, completion_mask=completion_mask,
    )


def test_bicot_rows_repeat_each_cot_for_its_images_and_put_text_first():
    from t2ir1.policy.logprobs import bicot_logprobs

    g = _generation()  # 2 CoTs x 3 images = 6 rows; text 4 tokens, image 5 tokens
    seen = {}

    def text_fn(prompt_ids, prompt_mask, completion_ids, completion_mask):
        seen["completion"] = completion_ids
        return completion_ids.float()  # the "log-prob" of a token is its id: rows are traceable

    def image_fn(prompt_ids, prompt_mask, image_tokens, position_ids=None):
        seen["positions"] = position_ids  # the generation's explicit positions (algo.prompt_quirks), else None
        return -image_tokens.float()

    logp, mask = bicot_logprobs(g, ("semantic", "token"), 3, text_fn, image_fn)
    assert logp.shape == mask.shape == (6, 4 + 5)
    # rows 0-2 carry CoT 0 (ids 100..103), rows 3-5 CoT 1 (104..107): repeat_interleave, not repeat
    assert logp[:, :4].tolist() == [[100.0, 101.0, 102.0, 103.0]] * 3 + [[104.0, 105.0, 106.0, 107.0]] * 3
    assert seen["completion"].shape == (6, 4)
    assert torch.equal(logp[:, 4:], -g.image_tokens.float())
    # CoT 1's padding stays masked in its three rows; image tokens are never masked
    assert mask[:, :4].tolist() == [[1, 1, 1, 1]] * 3 + [[1, 1, 0, 0]] * 3
    assert mask[:, 4:].all()
    only_image, image_mask = bicot_logprobs(g, ("token",), 3, text_fn, image_fn)
    assert torch.equal(only_image, -g.image_tokens.float()) and image_mask.shape == (6, 5)
    only_text, _ = bicot_logprobs(g, ("semantic",), 3, text_fn, image_fn)
    assert torch.equal(only_text, logp[:, :4])
    assert seen["positions"] is None
    positions = torch.arange(g.image_prompt_ids.shape[1]).expand(6, -1)
    bicot_logprobs(dataclasses.replace(g, image_prompt_positions=positions), ("token",), 3, text_fn, image_fn)
    assert seen["positions"] is positions
    with pytest.raises(ValueError, match="names no level"):
        bicot_logprobs(g, (), 3, text_fn, image_fn)


def test_policy_and_reference_share_one_log_prob_contract(tiny_policy):
    """Same method, same call: at initialisation the reference (a frozen copy) gives the policy's
    values; after the policy moves, they differ, and only the policy's carry gradients."""
    engine = GenerationEngine(tiny_policy, SamplingOptions(max_new_tokens=5, cfg_weight=1.0))
    g = engine.generate(["a red cube"], [3], group_size=2, images_per_cot=2, use_cot=True, reasoning_template="Say {}.", system_prompt="S")
    reference = tiny_policy.make_reference()
    args = dict(levels=("semantic", "token"), images_per_cot=2, chunk_logits=1 << 12)
    policy_logp, policy_mask = tiny_policy.sequence_logprobs(g, **args)
    ref_logp, ref_mask = reference.sequence_logprobs(g, **args)
    assert policy_logp.requires_grad and not ref_logp.requires_grad
    assert torch.equal(policy_mask, ref_mask)
    torch.testing.assert_close(policy_logp.detach(), ref_logp)
    with torch.no_grad():
        tiny_policy.lm_head.weight.add_(torch.randn(tiny_policy.lm_head.weight.shape, generator=torch.Generator().manual_seed(0)))
    moved, _ = tiny_policy.sequence_logprobs(g, **args)
    text_width = g.completion_ids.shape[1]
    assert not torch.allclose(moved[:, :text_width].detach(), ref_logp[:, :text_width])
    torch.testing.assert_close(moved[:, text_width:].detach(), ref_logp[:, text_width:])  # lm_head is text-only
