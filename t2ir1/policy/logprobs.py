"""Per-token log-probabilities without materialising a full-vocabulary log-softmax.

Janus-Pro's heads are wide (102,400 text tokens, 16,384 image codes) and sequences are
long (576 image tokens per row), so ``log_softmax(head(h))`` for a whole batch costs
``N * T * V * 4`` bytes in the forward and as much again in the backward. Here the head
runs on chunks of positions under activation checkpointing: only one chunk's logits
exist at a time, in the forward and in the recomputation of the backward.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

if TYPE_CHECKING:
    from t2ir1.rollout.engine import Generation

# Logits held at once when a head runs chunk by chunk (``algo.logprob_chunk_logits``'s default):
# 2M floats = 8 MiB in float32, e.g. 20 positions of Janus-Pro's 102,400-token text head.
LOGPROB_CHUNK_LOGITS = 1 << 21


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """``hidden`` [K, H], ``targets`` [K] -> log p(target) [K] in float32, of ``softmax(logits / temperature)``."""
    logits = head(hidden).float()  # [K, V]
    if temperature != 1.0:
        logits = logits / temperature
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [K]
    return target_logits - torch.logsumexp(logits, dim=-1)


def selective_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log softmax(head(hidden) / temperature)[target] per position, computed chunk by chunk.

    Args:
        hidden: ``[N, T, H]`` hidden states that predict ``targets``.
        targets: ``[N, T]`` token ids.
        head: maps ``[K, H]`` to logits ``[K, V]`` (``lm_head`` or Janus's generation head).
        chunk_size: positions per chunk; peak extra memory is ``chunk_size * V`` floats.
        temperature: the logits are divided by it (1: the model's own distribution).
    Returns:
        ``[N, T]`` float32 log-probabilities, differentiable w.r.t. ``hidden`` and ``head``.
    """
    n_rows, n_pos, width = hidden.shape
    flat_hidden = hidden.reshape(n_rows * n_pos, width)  # [N*T, H]
    flat_targets = targets.reshape(n_rows * n_pos)  # [N*T]
    needs_grad = torch.is_grad_enabled() and (
        flat_hidden.requires_grad or any(p.requires_grad for p in getattr(head, "parameters", lambda: [])())
    )
    pieces = []
    for start in range(0, flat_hidden.shape[0], chunk_size):
        h = flat_hidden[start : start + chunk_size]
        t = flat_targets[start : start + chunk_size]
        if needs_grad:
            pieces.append(checkpoint(_chunk_logprobs, h, t, head, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, t, head, temperature))
    return torch.cat(pieces).view(n_rows, n_pos)


def naive_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The straightforward ``log_softmax`` + ``gather`` (reference for tests and benchmarks)."""
    logits = head(hidden).float()  # [N, T, V]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def positions_per_chunk(chunk_logits: int, vocab_size: int) -> int:
    """Positions whose logits fit a budget of ``chunk_logits`` floats (at least one)."""
    return max(1, chunk_logits // vocab_size)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. ``[N, L]`` -> ``[N, L]``."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def text_logprobs(
    language_model: nn.Module,
    lm_head: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_logits: int = LOGPROB_CHUNK_LOGITS,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs of the semantic-CoT tokens under ``language_model`` + ``lm_head``.

    The ``G`` CoTs of a prompt share its semantic prompt (about 100 tokens against a CoT of
    at most 40 in the demo): when rows repeat, each distinct prompt runs once and its key/value
    states serve every CoT drawn from it (:func:`_shared_prompt_states`); gradients flow
    through the shared states as through ``G`` copies. Without repeated rows, under FSDP, or
    while activation checkpointing would recompute the layers, one forward covers prompt +
    completion (:func:`_may_share_prompts`).

    Args:
        prompt_ids, prompt_mask: ``[N, P]`` left-padded semantic prompts.
        completion_ids, completion_mask: ``[N, C]`` sampled completions (mask 1 up to and
            including the first EOS).
        chunk_logits: logits held at once (positions per chunk = this // vocabulary size).
        embed: the text embedding table to read the ids with (default: ``language_model``'s
            own; the original's reference reads the policy's, ``ReferenceModel``).
        temperature: of the scored distribution (1, the original: the model's own; the sampling
            temperature with ``algo.tempered_logprobs``).
    Returns:
        ``[N, C]`` float32 log-probabilities (values at masked positions are meaningless).
    """
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [N, P+C]
    positions = positions_from_mask(attention_mask)
    n_prompt, n_completion = prompt_ids.shape[1], completion_ids.shape[1]

    def inputs(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": ids} if embed is None else {"inputs_embeds": embed(ids)}

    group = _prompt_groups(prompt_ids, prompt_mask) if _may_share_prompts(language_model) else None
    if group is None:
        out = language_model(
            **inputs(torch.cat([prompt_ids, completion_ids], dim=1)),
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
        )
        # the hidden state at position i predicts token i + 1
        hidden = out.last_hidden_state[:, n_prompt - 1 : n_prompt - 1 + n_completion]  # [N, C, H]
    else:
        cache, hidden = _shared_prompt_states(language_model, inputs(prompt_ids[::group]), prompt_mask[::group], group)
        if n_completion > 1:  # the completion's own tokens predict all but its first
            out = language_model(
                **inputs(completion_ids[:, :-1]),
                attention_mask=attention_mask[:, :-1],
                position_ids=positions[:, n_prompt:-1],
                use_cache=True,
                **{_cache_keyword(language_model): cache},
            )
            hidden = torch.cat([hidden, out.last_hidden_state], dim=1)  # [N, C, H]
    chunk = positions_per_chunk(chunk_logits, lm_head.out_features)
    return selective_logprobs(hidden, completion_ids, lm_head, chunk, temperature)


def _may_share_prompts(language_model: nn.Module) -> bool:
    """Whether the prompts may run apart from their completions (two forwards instead of one).

    Not when a backward will recompute the decoder layers (activation checkpointing would write
    the cache a second time), and not under FSDP, where each forward gathers every layer's
    weights: the second gather is not measured against the saved prompt compute (no GPU was
    lent to this work), so sharded runs keep one forward per pass.
    """
    from torch.distributed.fsdp import FSDPModule

    if isinstance(language_model, FSDPModule):
        return False
    if not torch.is_grad_enabled():
        return True
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    return not any(
        isinstance(layer, CheckpointWrapper) or getattr(layer, "gradient_checkpointing", False)
        for layer in getattr(language_model, "layers", [])
    )


def _prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int | None:
    """``n`` when the ``N`` rows are ``N / n`` runs of ``n >= 2`` adjacent identical prompts (the
    training layout: a prompt's ``G * k`` rows together), else None."""
    keys = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)  # [N, 2P]
    n_rows = keys.shape[0]
    n = int((keys == keys[:1]).all(dim=1).int().cumprod(0).sum())  # the first run's length
    if n < 2 or n_rows % n:
        return None
    blocks = keys.view(n_rows // n, n, -1)
    return n if bool((blocks == blocks[:, :1]).all()) else None


def _cache_keyword(language_model: nn.Module) -> str:
    """The forward's KV-cache argument: ``cache`` (transformers 5.25) or ``past_key_values``
    (earlier 5.x, e.g. 5.17; deprecated in 5.25)."""
    return _cache_keyword_of(type(language_model))


@functools.cache
def _cache_keyword_of(model_class: type) -> str:
    # read once per class: inspect.signature would otherwise run at every log-prob pass
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _shared_prompt_states(
    language_model: nn.Module, prompt_inputs: dict[str, torch.Tensor], prompt_mask: torch.Tensor, group: int
) -> tuple[DynamicCache, torch.Tensor]:
    """Run ``U`` distinct prompts once; return their key/value cache expanded to the ``U * group``
    rows and the hidden state ``[N, 1, H]`` of each row's last prompt position, which predicts its
    first completion token. The expansion is ``expand`` + ``reshape``, whose backward sums each
    group in a fixed order (an index-based gather would accumulate its gradient in an order that
    varied between runs)."""
    cache = DynamicCache()
    out = language_model(
        **prompt_inputs,
        attention_mask=prompt_mask,
        position_ids=positions_from_mask(prompt_mask),
        use_cache=True,
        **{_cache_keyword(language_model): cache},
    )

    def expand(states: torch.Tensor) -> torch.Tensor:  # [U, ...] -> [U * group, ...]
        return states.unsqueeze(1).expand(states.shape[0], group, *states.shape[1:]).flatten(0, 1)

    shared = DynamicCache(ddp_cache_data=[(expand(layer.keys), expand(layer.values)) for layer in cache.layers])
    return shared, expand(out.last_hidden_state[:, -1:])


def image_logprobs(
    language_model: nn.Module,
    generation_head: nn.Module,
    embed_image_tokens: Callable[[torch.Tensor], torch.Tensor],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    image_tokens: torch.Tensor,
    chunk_logits: int = LOGPROB_CHUNK_LOGITS,
    position_ids: torch.Tensor | None = None,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs of the image tokens under ``language_model`` + the generation head.

    Args:
        prompt_ids, prompt_mask: ``[N, P]`` image prompts ending in ``<begin_of_image>``
            (left-padded, or the original's right-padded layout with ``position_ids``).
        image_tokens: ``[N, T]`` sampled VQ codes.
        embed_image_tokens: codes ``[N, T-1]`` -> embeddings ``[N, T-1, H]`` (generation
            embeddings + aligner; frozen, shared with the reference).
        position_ids: ``[N, P]`` the prompt's positions as the rollout used them
            (``Generation.image_prompt_positions``; default: from the mask, 0 at the first real
            token); the image tokens continue from each row's last one.
        embed: the text embedding table to read ``prompt_ids`` with (default:
            ``language_model``'s own; the original's reference reads the policy's).
        temperature: of the scored distribution (as :func:`text_logprobs`).
    Returns:
        ``[N, T]`` float32 log-probabilities of the image tokens (conditional, no CFG).
    """
    text_embed = language_model.get_input_embeddings() if embed is None else embed
    text_embeds = text_embed(prompt_ids)  # [N, P, H]
    image_embeds = embed_image_tokens(image_tokens[:, :-1]).to(text_embeds.dtype)  # [N, T-1, H]
    inputs_embeds = torch.cat([text_embeds, image_embeds], dim=1)  # [N, P+T-1, H]
    ones = torch.ones(image_tokens.shape[0], image_tokens.shape[1] - 1, dtype=prompt_mask.dtype, device=prompt_mask.device)
    attention_mask = torch.cat([prompt_mask, ones], dim=1)
    if position_ids is None:
        positions = positions_from_mask(attention_mask)  # [N, P+T-1]
    else:
        steps = torch.arange(1, image_tokens.shape[1], device=position_ids.device)  # [T-1]
        positions = torch.cat([position_ids, position_ids[:, -1:] + steps], dim=1)  # [N, P+T-1]
    out = language_model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=False,
    )
    n_prompt, n_image = prompt_ids.shape[1], image_tokens.shape[1]
    hidden = out.last_hidden_state[:, n_prompt - 1 : n_prompt - 1 + n_image]  # [N, T, H]
    chunk = positions_per_chunk(chunk_logits, generation_head.vision_head.out_features)
    return selective_logprobs(hidden, image_tokens, generation_head, chunk, temperature)


def bicot_logprobs(
    generation: Generation,
    levels: Sequence[str],
    images_per_cot: int,
    text_fn: Callable[..., torch.Tensor],
    image_fn: Callable[..., torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and mask of one generated batch's BiCoT rows: text tokens first, then image tokens.

    The generation holds ``B*G`` semantic rows (prompt + CoT) and ``N = B*G*k`` image rows, the
    ``k = images_per_cot`` images of one CoT adjacent. Each image row carries its CoT's text
    tokens (``repeat_interleave`` by ``k``), so that row ``i`` is one sample of both levels
    (REFERENCE §2: the loss sums over semantic and token log-probs of a sample).

    Args:
        generation: the engine's output (``t2ir1.rollout.engine.Generation``).
        levels: the trained levels, a non-empty subset of ``("semantic", "token")``.
        images_per_cot: ``k``.
        text_fn: ``(prompt_ids, prompt_mask, completion_ids, completion_mask) -> [N, C]``.
        image_fn: ``(prompt_ids, prompt_mask, image_tokens, position_ids=None) -> [N, T_img]``
            (``position_ids``: the generation's explicit image-prompt positions, or None).
    Returns:
        ``logp`` and ``mask``, both ``[N, C + T_img]`` (``C`` only with ``semantic``, ``T_img``
        only with ``token``); image positions are never masked (REFERENCE §5b).
    """
    parts, masks = [], []
    if "semantic" in levels:
        if not generation.has_cot:
            raise ValueError("levels include 'semantic' but the generation sampled no semantic CoT (use_cot=False)")
        prompt_ids, prompt_mask, completion_ids, completion_mask = (
            t.repeat_interleave(images_per_cot, dim=0)  # [B*G, .] -> [N, .]
            for t in (
                generation.semantic_prompt_ids,
                generation.semantic_prompt_mask,
                generation.completion_ids,
                generation.completion_mask,
            )
        )
        parts.append(text_fn(prompt_ids, prompt_mask, completion_ids, completion_mask))  # [N, C]
        masks.append(completion_mask)
    if "token" in levels:
        # explicit positions of the original's right-padded layout (algo.prompt_quirks), else None
        positions = generation.image_prompt_positions
        parts.append(
            image_fn(generation.image_prompt_ids, generation.image_prompt_mask, generation.image_tokens, position_ids=positions)
        )
        masks.append(torch.ones_like(generation.image_tokens))  # [N, T_img]
    if not parts:
        raise ValueError(f"levels={list(levels)} names no level; use a non-empty subset of ['semantic', 'token']")
    return torch.cat(parts, dim=1), torch.cat(masks, dim=1)
