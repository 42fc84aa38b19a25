"""The BiCoT-GRPO objective (T2I-R1, arXiv 2505.00703, Eq. 2-4; REFERENCE §2.6).

One row per generated sample: its semantic-CoT text tokens followed by its image tokens,
right-padded to a common length ``T``; ``mask`` marks the real tokens. Pure tensor math:
no config, no ``torch.distributed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def _token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """One masked mean over every real token of the batch (T2I-R1): ``sum / sum(mask)``."""
    return (per_token * mask).sum() / mask.sum()


@dataclass(frozen=True)
class Aggregation:
    """How per-token losses become one scalar: ``total(per_token, mask) / normaliser``.

    ``total`` is a sum over rows (so that totals of several batches add up) and ``count`` is
    the normaliser of one batch; the normaliser of several batches (ranks, gradient-accumulation
    micro-batches) is the sum of their counts, which makes the loss of their union one
    aggregation over all their rows.
    """

    name: str
    total: Callable[[Tensor, Tensor], Tensor]  # (per_token [N, T], mask [N, T]) -> scalar
    count: Callable[[Tensor, int | None], Tensor]  # (mask [N, T], max_tokens_per_row) -> scalar


def _masked_sum(per_token: Tensor, mask: Tensor) -> Tensor:
    return (per_token * mask).sum()


def _row_mean_sum(per_token: Tensor, mask: Tensor) -> Tensor:
    """Sum over rows of each row's masked mean; empty rows count as 0 (DeepSeekMath GRPO)."""
    row_sums = (per_token * mask).sum(dim=1)  # [N]
    return (row_sums / mask.sum(dim=1).clamp(min=1.0)).sum()


def _token_count(mask: Tensor, max_tokens_per_row: int | None) -> Tensor:
    return mask.sum()


def _row_count(mask: Tensor, max_tokens_per_row: int | None) -> Tensor:
    return torch.tensor(float(mask.shape[0]), device=mask.device)


def _constant_count(mask: Tensor, max_tokens_per_row: int | None) -> Tensor:
    """``N * max_tokens_per_row`` (Dr. GRPO, arXiv 2503.20783).

    ``max_tokens_per_row`` is the most tokens a row can hold (the sum of the trained levels'
    maximum lengths: ``max_new_tokens`` and/or ``num_image_tokens``), not this batch's padded
    width ``T``, which changes with every batch's longest CoT and so would re-weight batches.
    """
    if max_tokens_per_row is None:
        raise ValueError(
            "aggregation 'dr_grpo' needs max_tokens_per_row (the sum of the trained levels' maximum "
            "lengths, max_new_tokens and/or num_image_tokens); the batch's padded width is not a constant"
        )
    if max_tokens_per_row < mask.shape[1]:
        raise ValueError(
            f"max_tokens_per_row={max_tokens_per_row} is smaller than the batch width {mask.shape[1]}; "
            "it must be the maximum completion length of the trained levels"
        )
    return torch.tensor(float(mask.shape[0] * max_tokens_per_row), device=mask.device)


# Chosen by name from the algo config; each aggregation knows its own normaliser.
AGGREGATIONS: dict[str, Aggregation] = {
    # T2I-R1: one masked mean over every real token (text + image) of the batch.
    "token_mean": Aggregation("token_mean", _masked_sum, _token_count),
    # DeepSeekMath GRPO: mean over rows of each row's masked mean.
    "sequence_mean": Aggregation("sequence_mean", _row_mean_sum, _row_count),
    # Dr. GRPO: masked sum over a constant, rows x the maximum row length.
    "dr_grpo": Aggregation("dr_grpo", _masked_sum, _constant_count),
}


def loss_normalizer(aggregation: str, mask: Tensor, max_tokens_per_row: int | None = None) -> Tensor:
    """The normaliser ``aggregation`` divides one batch's total by (float32 scalar).

    ``token_mean``: real tokens ``sum(mask)``; ``sequence_mean``: rows ``N``; ``dr_grpo``:
    ``N * max_tokens_per_row``. Summed over ranks and micro-batches it is the normaliser of
    their union (what ``bicot_grpo_loss(..., normalizer=)`` takes for a global token mean).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[aggregation].count(mask.detach().float(), max_tokens_per_row).float()


# Log-ratios are clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before ``exp``: an off-policy
# ratio (num_iterations > 1, or a stale rollout) or a far-off reference can otherwise overflow
# float32 to inf and turn the loss into NaN. exp(20) ~ 4.9e8 is far outside any clip range.
LOG_RATIO_CLAMP = 20.0


def _check_shapes(
    logp: Tensor, old_logp: Tensor | None, ref_logp: Tensor | None, advantages: Tensor, mask: Tensor
) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp must be [N, T]; got shape {tuple(logp.shape)}")
    for name, tensor in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}; expected {tuple(logp.shape)} like logp"
            )
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages must be [N] = [{logp.shape[0]}]; got shape {tuple(advantages.shape)}")


def bicot_grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    beta: float,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    aggregation: str = "token_mean",
    max_tokens_per_row: int | None = None,
    normalizer: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """BiCoT-GRPO loss over text + image tokens, with detached diagnostics.

    Per token ``t`` of row ``i`` (REFERENCE §2.6)::

        ratio = exp(logp - old_logp)
        surrogate = min(ratio * A_i, clip(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * A_i)
        kl = exp(ref_logp - logp) - (ref_logp - logp) - 1          # k3 estimator, >= 0
        loss_t = -(surrogate - beta * kl)

    T2I-R1 does one update per rollout, so ``old_logp = logp.detach()``: the ratio is exactly
    1, the surrogate equals ``A_i`` in value, and its gradient is ``A_i * grad(logp)``. Pass
    ``old_logp=None`` for that case. With ``ratio == 1`` clipping never engages.

    Computation is in float32 whatever the input dtype. Masked-out positions are replaced by 0
    before any arithmetic, so padding may hold any value (even ``-inf``) without affecting the
    loss or producing NaN gradients.

    Args:
        logp: ``[N, T]`` log-probs of the sampled tokens under the policy (with grad).
        old_logp: ``[N, T]`` log-probs under the rollout policy, or None for ``logp.detach()``.
        ref_logp: ``[N, T]`` log-probs under the frozen reference model, or None for no KL term.
        advantages: ``[N]`` one advantage per row (see ``algos.advantages.group_normalized``).
        mask: ``[N, T]`` bool or float, 1 on real tokens (text up to and including EOS, then
            all image tokens), 0 on padding.
        beta: KL coefficient (paper: 0.01); 0 disables the KL term.
        clip_eps_low: lower PPO clip range, ratio floor ``1 - clip_eps_low``.
        clip_eps_high: upper PPO clip range, ratio ceiling ``1 + clip_eps_high``.
        aggregation: ``"token_mean"`` (paper: one masked mean over all tokens of the batch),
            ``"sequence_mean"`` (mean of per-row masked means) or ``"dr_grpo"``
            (masked sum / ``N * max_tokens_per_row``).
        max_tokens_per_row: Dr. GRPO's constant row length, the sum of the trained levels'
            maximum lengths (``max_new_tokens`` and/or ``num_image_tokens``); required for
            ``dr_grpo``, ignored otherwise.
        normalizer: what the aggregated total is divided by; None = this batch's own
            normaliser (``loss_normalizer(aggregation, mask, max_tokens_per_row)``). Pass the
            sum of the normalisers of every rank and micro-batch of an optimiser step (times
            the number of them, which gradient averaging divides by again) for a loss whose
            gradient does not depend on how the step's rows were split (verl's ``agg_loss``).

    Log-ratios (``logp - old_logp`` and ``ref_logp - logp``) are clamped to
    ``±LOG_RATIO_CLAMP`` before ``exp`` so that off-policy ratios cannot overflow.

    Returns:
        ``(loss, diagnostics)``: scalar loss, and detached float32 scalars ``kl`` (masked mean
        of the k3 KL), ``clip_frac`` (fraction of real tokens whose gradient the clip removed),
        ``ratio_mean`` (masked mean ratio), ``adv_std`` (population std of ``advantages``) and
        ``pg_loss`` (the aggregated ``-surrogate`` alone, same normaliser) and
        ``normalizer`` (this batch's own normaliser, whatever ``normalizer`` was passed).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")
    _check_shapes(logp, old_logp, ref_logp, advantages, mask)
    real = mask.bool()  # [N, T]
    weights = real.float()  # [N, T]
    if not real.any():
        raise ValueError("mask selects no tokens; every row is padding, so there is nothing to train on")
    zero = torch.zeros((), dtype=torch.float32, device=logp.device)

    logp = torch.where(real, logp.float(), zero)  # [N, T]
    old = logp.detach() if old_logp is None else torch.where(real, old_logp.detach().float(), zero)
    adv = advantages.detach().float().unsqueeze(1)  # [N, 1]

    ratio = torch.exp((logp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [N, T]
    clipped_ratio = ratio.clamp(1.0 - clip_eps_low, 1.0 + clip_eps_high)
    surrogate = torch.minimum(ratio * adv, clipped_ratio * adv)  # [N, T]

    use_kl = ref_logp is not None and beta != 0.0
    if use_kl:
        log_ref_ratio = torch.where(real, ref_logp.detach().float(), zero) - logp  # [N, T]
        log_ref_ratio = log_ref_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0  # [N, T]
        per_token = -(surrogate - beta * kl)
    else:
        kl = torch.zeros_like(logp)
        per_token = -surrogate

    aggregate = AGGREGATIONS[aggregation]
    own_normalizer = aggregate.count(weights, max_tokens_per_row).float()
    divisor = own_normalizer if normalizer is None else normalizer
    loss = aggregate.total(per_token, weights) / divisor

    with torch.no_grad():
        # Clipping removes the gradient only where the clipped branch wins the min.
        clipped = ((ratio < 1.0 - clip_eps_low) & (adv < 0)) | ((ratio > 1.0 + clip_eps_high) & (adv > 0))
        diagnostics = {
            "kl": _token_mean(kl, weights).detach(),
            "clip_frac": _token_mean(clipped.float(), weights),
            "ratio_mean": _token_mean(ratio, weights).detach(),
            "adv_std": advantages.detach().float().std(unbiased=False),
            "pg_loss": (aggregate.total(-surrogate, weights) / divisor).detach(),
            "normalizer": own_normalizer.detach(),
        }
    return loss, diagnostics
