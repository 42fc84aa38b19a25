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
