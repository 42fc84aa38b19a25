"""The rollout loops as they were before the generation engine (kept as a reference).

An eager Python loop over a growing ``DynamicCache``, one ``LlamaModel.forward`` per token.
Tests compare the engine with it token for token (greedy) and ``benchmarks/rollout.py``
times it as "today's loop". Nothing in the platform generates through it.

Randomness comes from one ``torch.Generator`` per prompt (``generators[b]``), drawn
through the Gumbel-max trick, so a prompt's samples do not depend on which other prompts
share its batch, which rank it runs on, or how many ranks there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from t2ir1.policy.janus import JanusPolicy
from t2ir1.policy.logprobs import positions_from_mask


def prompt_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s) % (2**63 - 1)) for s in seeds]


def sample_from_logits(
    logits: torch.Tensor, temperature: float, generators: Sequence[torch.Generator] | None, rows_per_generator: int
) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)``; greedy when temperature is 0.

    Args:
        logits: ``[R, V]`` with ``R = len(generators) * rows_per_generator``; rows of
            generator ``g`` are the contiguous block ``[g * k, (g + 1) * k)``.
    Returns:
        ``[R]`` token ids.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if generators is None:
        return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), 1).squeeze(-1)
    # Gumbel-max: argmax(l / T + G) with G ~ Gumbel(0, 1) is a sample of softmax(l / T)
    uniform = torch.cat(
        [
            torch.rand(rows_per_generator, logits.shape[-1], generator=g, device=g.device, dtype=torch.float32)
            for g in generators
        ]
    ).to(logits.device)  # [R, V]
    exponential = (-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20)  # Exp(1) draws, never 0
    gumbel = -torch.log(exponential)
    return (logits.float() / temperature + gumbel).argmax(dim=-1)


@dataclass
class SemanticRollout:
    """Semantic-level CoT samples; rows are grouped per prompt (``G`` consecutive rows)."""

    prompt_ids: torch.Tensor  # [B*G, P] left-padded
    prompt_mask: torch.Tensor  # [B*G, P]
    completion_ids: torch.Tensor  # [B*G, C] padded after EOS
    completion_mask: torch.Tensor  # [B*G, C] 1 up to and including the first EOS
    texts: list[str]


@torch.no_grad()
def sample_semantic_cot(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> SemanticRollout:
    """Sample ``group_size`` completions per prompt, all ``B * G`` rows in one batch.

    Args:
        prompt_ids, prompt_mask: ``[B, P]`` left-padded semantic prompts.
    Returns:
        A :class:`SemanticRollout` with ``B * G`` rows. Tokens after a row's first EOS are
        masked out; the EOS itself counts.
    """
    lm, head = policy.language_model, policy.lm_head
    ids = prompt_ids.repeat_interleave(group_size, dim=0)  # [B*G, P]
    mask = prompt_mask.repeat_interleave(group_size, dim=0)
    n_rows = ids.shape[0]
    cache = DynamicCache()
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), past_key_values=cache, use_cache=True)
    last_hidden = out.last_hidden_state[:, -1]  # [B*G, H]
    positions = positions_from_mask(mask)[:, -1:]  # [B*G, 1]
    running_mask = mask
    finished = torch.zeros(n_rows, dtype=torch.bool, device=ids.device)
    tokens, keep = [], []
    for _ in range(max_new_tokens):
        logits = head(last_hidden)  # [B*G, V]
        next_token = sample_from_logits(logits, temperature, generators, group_size)
        next_token = torch.where(finished, torch.full_like(next_token, policy.pad_id), next_token)
        keep.append(~finished)
        tokens.append(next_token)
        finished = finished | (next_token == policy.eos_id)
        if bool(finished.all()):
            break
        positions = positions + 1
        running_mask = torch.cat([running_mask, torch.ones_like(running_mask[:, :1])], dim=1)
        out = lm(
            input_ids=next_token[:, None],
            attention_mask=running_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        last_hidden = out.last_hidden_state[:, -1]
    completion_ids = torch.stack(tokens, dim=1)  # [B*G, C]
    completion_mask = torch.stack(keep, dim=1).long()
    return SemanticRollout(ids, mask, completion_ids, completion_mask, policy.decode_text(completion_ids, completion_mask))


def unconditional_ids(prompt_ids: torch.Tensor, bos_id: int, boi_id: int, pad_id: int) -> torch.Tensor:
    """The CFG unconditional row: every token but BOS and ``<begin_of_image>`` becomes pad."""
    keep = (prompt_ids == bos_id) | (prompt_ids == boi_id)
    return torch.where(keep, prompt_ids, torch.full_like(prompt_ids, pad_id))


@torch.no_grad()
def sample_image_tokens(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    cfg_weight: float = 5.0,
    temperature: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Sample the image tokens of every row with classifier-free guidance.

    Conditional and unconditional rows go through the language model in one forward per
    step (``2N`` rows) with a KV cache; ``logits = uncond + w * (cond - uncond)`` from the
    generation head. At ``w == 1`` the guided logits are the conditional ones, so only the
    ``N`` conditional rows run (half the work, same distribution).

    Args:
        prompt_ids, prompt_mask: ``[N, P]`` left-padded image prompts ending in ``<begin_of_image>``.
        generators: one per block of ``N / len(generators)`` consecutive rows.
    Returns:
        ``[N, T]`` image token ids, ``T = policy.num_image_tokens``.
    """
    lm = policy.language_model
    n_rows = prompt_ids.shape[0]
    rows_per_generator = n_rows // len(generators) if generators else n_rows
    guided_rows = cfg_weight != 1.0
    if guided_rows:
        uncond = unconditional_ids(prompt_ids, policy.bos_id, policy.boi_id, policy.pad_id)
        both_ids = torch.cat([prompt_ids, uncond])  # [2N, P]
        mask = torch.cat([prompt_mask, prompt_mask])  # [2N, P]
    else:
        both_ids, mask = prompt_ids, prompt_mask  # [N, P]: w = 1 needs no unconditional row
    cache = DynamicCache()
    out = lm(input_ids=both_ids, attention_mask=mask, position_ids=positions_from_mask(mask), past_key_values=cache, use_cache=True)
    positions = positions_from_mask(mask)[:, -1:]
    image_tokens = torch.empty(n_rows, policy.num_image_tokens, dtype=torch.long, device=prompt_ids.device)
    for step in range(policy.num_image_tokens):
        logits = policy.generation_head(out.last_hidden_state[:, -1])  # [2N or N, V_img]
        if guided_rows:
            cond, uncond_logits = logits[:n_rows], logits[n_rows:]
            logits = uncond_logits + cfg_weight * (cond - uncond_logits)  # [N, V_img]
        next_token = sample_from_logits(logits, temperature, generators, rows_per_generator)
        image_tokens[:, step] = next_token
        if step + 1 == policy.num_image_tokens:
            break
        fed = torch.cat([next_token, next_token]) if guided_rows else next_token
        embeds = policy.embed_image_tokens(fed[:, None])  # [2N or N, 1, H]
        positions = positions + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = lm(
            inputs_embeds=embeds.to(lm.get_input_embeddings().weight.dtype),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
    return image_tokens


def decode_images(policy: JanusPolicy, image_tokens: torch.Tensor, micro_batch_size: int = 16, truncate: bool = False) -> torch.Tensor:
    """The VQ decode before the engine's channels-last one: NCHW activations, ``micro_batch_size`` images a call."""
    return policy.decode_images(image_tokens, micro_batch_size, truncate, layout=torch.contiguous_format, dtype="model")
