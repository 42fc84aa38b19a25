"""The original T2I-R1's generation loop, re-stated for benchmarks (never used to train).

Each element cites ``CaraJ7/T2I-R1`` ``src/t2i-r1/src/open_r1/trainer/grpo_trainer.py`` at
commit 2d9d4d1 (``grpo_trainer.py:LINE``). What it does, and what makes it slow:

* CoT: transformers ``generate(inputs_embeds=..., do_sample=True)`` over the whole batch
  (grpo_trainer.py:477-487);
* image prompts right-padded, ``<begin_of_image>`` appended after the pads
  (grpo_trainer.py:563-576);
* conditional and unconditional rows interleaved (``[0::2]`` / ``[1::2]``), the unconditional
  row = BOS + pad embeddings + ``<begin_of_image>``, attending to every position
  (grpo_trainer.py:592-600);
* chunks of ``split_size = 32`` rows (grpo_trainer.py:602-608);
* one ``language_model.model(...)`` call per token over a growing dynamic cache and a mask
  grown by ``torch.cat`` (grpo_trainer.py:612-617, 634);
* CFG mix, softmax at temperature, ``torch.multinomial`` (grpo_trainer.py:621-627);
* VQ decode of all images at once (grpo_trainer.py:700).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from t2ir1.policy.prompts import image_prompt
from t2ir1.testing.legacy_rollout import decode_images

SPLIT_SIZE = 32  # grpo_trainer.py:602


@torch.no_grad()
def original_cot(policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int, max_new_tokens: int):
    """CoT ids ``[B*G, C]``: transformers' sampling ``generate`` on the repeated prompts (grpo_trainer.py:454-487)."""
    ids = prompt_ids.repeat_interleave(group_size, dim=0)
    mask = prompt_mask.repeat_interleave(group_size, dim=0)
    return policy.model.generate(
        input_ids=ids,
        attention_mask=mask,
        pad_token_id=policy.eos_id,
        eos_token_id=policy.eos_id,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        use_cache=True,
    )


def right_padded_image_prompts(policy, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded image prompts with ``<begin_of_image>`` appended after the pads (grpo_trainer.py:563-576)."""
    enc = policy.tokenizer(list(texts), padding=True, padding_side="right", return_tensors="pt")
    ids, mask = enc["input_ids"].to(policy.device), enc["attention_mask"].to(policy.device)
    ids = torch.cat([ids, ids.new_full((ids.shape[0], 1), policy.boi_id)], dim=1)
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return ids, mask


@torch.no_grad()
def original_image_tokens(
    policy, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, cfg_weight: float = 5.0, temperature: float = 1.0
) -> torch.Tensor:
    """Image tokens ``[N, T]`` exactly as the original's loop produces them (grpo_trainer.py:585-640)."""
    lm = policy.language_model
    n_tokens = policy.num_image_tokens
    inputs_embeds = lm.get_input_embeddings()(prompt_ids)
    pad_embeds = lm.get_input_embeddings()(prompt_ids.new_full((1, 1), policy.pad_id))
    uncond = inputs_embeds.clone()
    uncond[:, 1:-1] = pad_embeds  # grpo_trainer.py:595-596
    embeds = torch.repeat_interleave(inputs_embeds, 2, dim=0)  # grpo_trainer.py:598-599
    embeds[1::2] = uncond
    masks = torch.repeat_interleave(attention_mask, 2, dim=0)
    masks[1::2] = torch.ones_like(masks[1::2])  # grpo_trainer.py:600-601: uncond rows attend everywhere
    chunks = []
    for start in range(0, embeds.shape[0], SPLIT_SIZE):  # grpo_trainer.py:603
        end = min(start + SPLIT_SIZE, embeds.shape[0])
        tokens = torch.zeros((end - start) // 2, n_tokens, dtype=torch.long, device=embeds.device)
        current, current_mask, past = embeds[start:end], masks[start:end], None
        for k in range(n_tokens):  # grpo_trainer.py:612-617: one forward per token, dynamic cache
            outputs = lm(inputs_embeds=current, use_cache=True, past_key_values=past, attention_mask=current_mask)
            past = outputs.past_key_values
            logits = policy.generation_head(outputs.last_hidden_state[:, -1, :])
            cond, uncond_logits = logits[0::2], logits[1::2]
            logits = uncond_logits + cfg_weight * (cond - uncond_logits)  # grpo_trainer.py:625
            probs = torch.softmax(logits / temperature, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1)  # grpo_trainer.py:627
            tokens[:, k] = next_token.squeeze(-1)
            both = torch.cat([next_token, next_token], dim=1).view(-1)  # grpo_trainer.py:631
            current = policy.embed_image_tokens(both[:, None])
            current_mask = torch.cat([current_mask, current_mask.new_ones((current_mask.shape[0], 1))], dim=1)
        chunks.append(tokens)
    return torch.cat(chunks)


@torch.no_grad()
def original_rollout(policy, prompts: Sequence[str], reasoning_template: str, system_prompt: str, group_size: int,
                     max_new_tokens: int, cfg_weight: float, decode_micro_batch_size: int = 16):  # fmt: skip
    """CoT -> right-padded image prompts -> interleaved CFG loop -> VQ decode, as the original."""
    ids, mask = policy.encode_semantic_prompts(list(prompts), reasoning_template, system_prompt)
    completions = original_cot(policy, ids, mask, group_size, max_new_tokens)
    cots = policy.tokenizer.batch_decode(completions, skip_special_tokens=True)  # grpo_trainer.py:543
    # the decoded CoT is not stripped (grpo_trainer.py:542-560)
    texts = [image_prompt(prompts[row // group_size], cot, strip_cot=False) for row, cot in enumerate(cots)]
    img_ids, img_mask = right_padded_image_prompts(policy, texts)
    tokens = original_image_tokens(policy, img_ids, img_mask, cfg_weight)
    # uint8 by truncation: the clipped floats are assigned to a uint8 array (grpo_trainer.py:704-706)
    return policy.to_pil(decode_images(policy, tokens, decode_micro_batch_size, truncate=True))  # NCHW, as the original
