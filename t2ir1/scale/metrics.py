"""Step metrics reduced across ranks as the one-process run would have computed them.

Each rank's value is a mean over its own items (tokens, rows, groups). Lightning's
``sync_dist=True`` averages those per-rank means with equal weights, which is wrong when
ranks hold different numbers of items (CoTs of different lengths, NaN reward rows). Here a
rank sends ``(mean * weight, weight)`` for every metric in one ``all_reduce(sum)``; the
global value is ``sum(mean_r * weight_r) / sum(weight_r)``: the mean over all items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor


def nanmean_with_count(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the non-NaN entries of ``values [N]`` and their count (0 entries: mean 0)."""
    values = values.detach().float()
    finite = ~torch.isnan(values)
    count = finite.sum().float()
    total = torch.where(finite, values, torch.zeros_like(values)).sum()
    return total / count.clamp_min(1.0), count


def weighted_means(
    pairs: Mapping[str, tuple[Tensor | float, Tensor | float]],
    all_reduce_sum: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Global means from per-rank ``(mean, weight)`` pairs with a single collective.

    Args:
        pairs: ``name -> (rank mean, rank weight)``; every rank must pass the same names in the
            same order. A rank with weight 0 contributes nothing (its mean may be NaN).
        all_reduce_sum: sums a tensor over ranks (``strategy.reduce(t, reduce_op="sum")``;
            the identity on one process).
    Returns:
        ``(means, total_weights)``: ``name -> float32 scalar`` each; a mean is NaN where the
        total weight is 0.
    """
    if not pairs:
        return {}, {}
    rows = []
    for mean, weight in pairs.values():
        mean = torch.as_tensor(mean, dtype=torch.float32, device=device).detach().reshape(())
        weight = torch.as_tensor(weight, dtype=torch.float32, device=device).detach().reshape(())
        weighted = torch.where(weight > 0, mean * weight, torch.zeros_like(mean))
        rows.append(torch.stack([weighted, weight]))
    totals = all_reduce_sum(torch.stack(rows))  # [K, 2]
    means = totals[:, 0] / totals[:, 1]
    means = torch.where(totals[:, 1] > 0, means, torch.full_like(means, float("nan")))
    names = list(pairs)
    return {n: means[i] for i, n in enumerate(names)}, {n: totals[i, 1] for i, n in enumerate(names)}


def pooled_std(mean: Tensor, square_mean: Tensor, count: Tensor) -> Tensor:
    """Unbiased std of ``count`` values from their mean and mean square (Bessel-corrected).

    ``var = (E[x^2] - E[x]^2) * n / (n - 1)``; NaN for fewer than two values, like ``Tensor.std``.
    """
    variance = (square_mean - mean.pow(2)).clamp_min(0.0) * count / (count - 1.0)
    return torch.where(count > 1, variance.sqrt(), torch.full_like(variance, float("nan")))
