"""Generation with a (trained) Janus policy: reasoning, then image (REFERENCE §2.1-2.2).

The same two sampling calls as a training rollout (``t2ir1.rollout.sampling``): the
semantic-level CoT is sampled from the reasoning prompt, then the image tokens from the
image prompt (``"{prompt}. {cot}"``) with classifier-free guidance, then decoded by the VQ
model. ``use_cot=False`` is the no-reasoning baseline (the image prompt is the prompt alone).

Randomness is one ``torch.Generator`` per prompt, seeded from ``(seed, prompt text)``, so a
prompt's samples do not depend on the batch it shares, the batch size, or which prompts
were generated before it (a resumed generation run reproduces the skipped prompts' images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from t2ir1.policy.janus import JanusPolicy
from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
from t2ir1.rollout.sampling import prompt_generators, sample_image_tokens, sample_semantic_cot

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One generated image with the text it came from."""

    prompt: str
    # the semantic-level CoT; None for the no-reasoning baseline
    cot: str | None
    image: Image.Image
    # [T] VQ codes of the image, on the CPU
    image_tokens: torch.Tensor
    # position of the prompt in the ``prompts`` argument
    prompt_index: int = 0
    # 0 .. n_per_prompt - 1 within its prompt
    sample_index: int = 0


def generation_seed(seed: int, prompt: str) -> int:
    """The sampling seed of ``prompt``: a function of the run seed and the prompt text only."""
    from t2ir1.lit.module import prompt_seed

    return prompt_seed(seed, 0, prompt)


def _validate(prompts: Sequence[str], n_per_prompt: int, batch_size: int, max_new_tokens: int, use_cot: bool) -> None:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a single string; wrap it in a list")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"prompts {empty[:10]} are empty or not strings; every prompt needs text")
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (prompts per forward), got {batch_size}")
    if use_cot and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 when use_cot is true, got {max_new_tokens}")


@torch.no_grad()
def generate_samples(
    policy: JanusPolicy,
    prompts: Sequence[str],
    n_per_prompt: int = 1,
    use_cot: bool = True,
    cfg_weight: float = 5.0,
    text_temperature: float = 1.0,
    image_temperature: float = 1.0,
    max_new_tokens: int = 1024,
    reasoning_template: str | None = "default",
    system_prompt: str = SYSTEM_PROMPT,
    batch_size: int = 1,
    seed: int = 0,
    decode_micro_batch_size: int = 16,
    on_batch: Callable[[list[Sample]], None] | None = None,
) -> list[Sample]:
    """Generate ``n_per_prompt`` images for every prompt (reasoning first unless ``use_cot`` is false).

    Args:
        policy: the Janus policy (its device is used for everything).
        prompts: ``B`` prompt texts.
        n_per_prompt: images per prompt; with ``use_cot`` each image has its own CoT.
        use_cot: sample a semantic-level CoT first (T2I-R1) or condition on the prompt alone.
        cfg_weight: classifier-free guidance weight ``w`` (``uncond + w * (cond - uncond)``).
        text_temperature: temperature of the CoT tokens (0 = greedy).
        image_temperature: temperature of the image tokens (0 = greedy).
        max_new_tokens: longest CoT in tokens.
        reasoning_template: ``"default"``, a template text with one ``{}``, or a path to one.
        system_prompt: the system line of the semantic prompt.
        batch_size: prompts per forward pass (each expands to ``n_per_prompt`` rows).
        seed: run seed; prompt ``p`` samples with ``generation_seed(seed, p)``.
        decode_micro_batch_size: images per VQ-decoder call.
        on_batch: called with each batch's samples as soon as they exist (progress, writing).
    Returns:
        ``B * n_per_prompt`` samples, prompt-major (``n_per_prompt`` consecutive per prompt).
    """
    prompts = list(prompts) if not isinstance(prompts, str) else prompts
    _validate(prompts, n_per_prompt, batch_size, max_new_tokens, use_cot)
    template = load_reasoning_prompt(reasoning_template)
    was_training = policy.training
    policy.eval()
    samples: list[Sample] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            generators = prompt_generators([generation_seed(seed, p) for p in batch], device=policy.device)
            if use_cot:
                ids, mask = policy.encode_semantic_prompts(batch, template, system_prompt)
                semantic = sample_semantic_cot(policy, ids, mask, n_per_prompt, max_new_tokens, text_temperature, generators)
                cots: list[str | None] = list(semantic.texts)  # [B*n], prompt-major
            else:
                cots = [None] * (len(batch) * n_per_prompt)
            row_prompts = [p for p in batch for _ in range(n_per_prompt)]
            img_ids, img_mask = policy.encode_image_prompts(row_prompts, cots)  # [B*n, P]
            image_tokens = sample_image_tokens(policy, img_ids, img_mask, cfg_weight, image_temperature, generators)
            pixels = policy.decode_images(image_tokens, decode_micro_batch_size)  # [B*n, S, S, 3] uint8
            images = policy.to_pil(pixels)
            batch_samples = [
                Sample(
                    prompt=row_prompts[row],
                    cot=cots[row],
                    image=images[row],
                    image_tokens=image_tokens[row].cpu(),
                    prompt_index=start + row // n_per_prompt,
                    sample_index=row % n_per_prompt,
                )
                for row in range(len(row_prompts))
            ]
            samples.extend(batch_samples)
            if on_batch is not None:
                on_batch(batch_samples)
    finally:
        policy.train(was_training)
    return samples
