"""Sampling primitives shared by both CoT levels: per-prompt generators, logit filters, draws.

Randomness comes from one ``torch.Generator`` per prompt, drawn through the Gumbel-max
trick over a block of that prompt's rows, so a prompt's samples do not depend on which
other prompts share its batch or chunk, which rank it runs on, or how many ranks there are.

The filters follow transformers' logits warpers in their order (temperature, then top-k,
then top-p), so ``top_k=50`` here is the CoT sampler of the original T2I-R1, which calls
``generate`` with transformers' defaults (REFERENCE §2.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (sha256 of their ``/``-joined text): stable across runs and ranks."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def prompt_seed(run_seed: int, step: int, prompt_id: str) -> int:
    """A training prompt's sampling seed: a function of the run seed, the step and the prompt only."""
    return derive_seed(run_seed, step, prompt_id)


def generation_seed(seed: int, prompt: str) -> int:
    """The sampling seed of ``prompt`` in ``generate.py`` / ``eval.py``: the run seed and the text only."""
    return prompt_seed(seed, 0, prompt)


def record_seed(seed: int, prompt_id: str) -> int:
    """The sampling seed of one held-out record (ShapeWorld): the evaluation seed and the record only."""
    return derive_seed("heldout", seed, prompt_id)


def prompt_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per prompt, seeded with ``seeds[b]``."""
    return [torch.Generator(device=device).manual_seed(int(s) % (2**63 - 1)) for s in seeds]


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to ``-inf`` the logits outside the top-k and outside the nucleus of mass ``top_p``.

    Same rules as transformers' ``TopKLogitsWarper`` (ties with the k-th value are kept) and
    ``TopPLogitsWarper`` (the smallest set whose mass reaches ``top_p``; at least one token).

    Args:
        logits: ``[R, V]`` (already divided by the temperature).
        top_k: keep the ``k`` largest per row; 0 keeps all.
        top_p: nucleus mass in ``(0, 1]``; 1 keeps all.
    Returns:
        ``[R, V]`` filtered logits (a new tensor when anything is filtered, else ``logits``).
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [R, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [R, V] ascending
        drop_sorted = cumulative <= (1 - top_p)
        drop_sorted[..., -1:] = False  # the most likely token always stays
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sampling_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The logits of the distribution a token is drawn from: ``filter(logits / T)`` in float32.

    Temperature 0 means greedy; its "distribution" is reported at temperature 1 (filtered).
    """
    scaled = logits.float() / temperature if temperature > 0 and temperature != 1 else logits.float()
    return filter_logits(scaled, top_k, top_p)


def draw(
    logits: torch.Tensor,
    greedy: bool,
    generators: Sequence[torch.Generator] | None,
    rows_per_generator: int,
) -> torch.Tensor:
    """One token per row from ``softmax(logits)`` (or its argmax when ``greedy``).

    Args:
        logits: ``[R, V]`` sampling logits (:func:`sampling_logits`), ``R = len(generators) *
            rows_per_generator``; rows of generator ``g`` are the block ``[g * k, (g + 1) * k)``.
    Returns:
        ``[R]`` token ids.
    """
    if greedy:
        return logits.argmax(dim=-1)
    if generators is None:
        return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
    # Gumbel-max: argmax(l + G) with G ~ Gumbel(0, 1) is a sample of softmax(l)
    uniform = torch.cat(
        [
            torch.rand(rows_per_generator, logits.shape[-1], generator=g, device=g.device, dtype=torch.float32)
            for g in generators
        ]
    ).to(logits.device)  # [R, V]
    exponential = (-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20)  # Exp(1) draws, never 0
    return (logits - torch.log(exponential)).argmax(dim=-1)


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float,
    generators: Sequence[torch.Generator] | None,
    rows_per_generator: int,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """One token per row from ``softmax(filter(logits / temperature))``; greedy at temperature 0."""
    return draw(sampling_logits(logits, temperature, top_k, top_p), temperature <= 0, generators, rows_per_generator)


def unconditional_ids(prompt_ids: torch.Tensor, bos_id: int, boi_id: int, pad_id: int) -> torch.Tensor:
    """The CFG unconditional row: every token but BOS and ``<begin_of_image>`` becomes pad."""
    keep = (prompt_ids == bos_id) | (prompt_ids == boi_id)
    return torch.where(keep, prompt_ids, torch.full_like(prompt_ids, pad_id))
