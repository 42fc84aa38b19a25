"""Group-normalised advantages of GRPO (T2I-R1, arXiv 2505.00703, Eq. 3; REFERENCE §2.5).

Rewards arrive flat, ``[B*G]``, laid out group by group: the ``G`` samples of prompt 0,
then the ``G`` samples of prompt 1, and so on (the order the rollout produces them).
Pure tensor math: no config, no ``torch.distributed``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Validate ``rewards[B*G]`` and view it as ``[B, G]`` (floating point)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a flat tensor [B*G]; got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(
            f"group_size is {group_size}; GRPO needs at least 2 samples per prompt "
            "(a group of one has no baseline and its unbiased std is undefined). "
            "Set algo.group_size >= 2."
        )
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a positive multiple of group_size={group_size}; "
            "the rollout must produce group_size samples for every prompt"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"rewards at indices {bad} are not finite (NaN/inf); "
            "the reward ensemble must replace or drop unscorable samples before advantages are computed"
        )
    return rewards.view(-1, group_size)  # [B, G]


def group_normalized(
    rewards: Tensor, group_size: int, eps: float = 1e-4, scale: bool = True, valid: Tensor | None = None
) -> Tensor:
    """Advantages normalised within each group of ``group_size`` samples of one prompt.

    ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` with the unbiased (``n - 1``) std,
    as in T2I-R1 (REFERENCE §2.5). With ``scale=False`` only the mean is removed,
    ``A_i = r_i - mean(r_group)`` (Dr. GRPO, arXiv 2503.20783), which does not up-weight
    groups whose rewards barely differ.

    A group whose rewards are all equal gets advantages of exactly 0 (never NaN, and no
    rounding residue of the mean divided by ``eps``).

    ``valid`` marks scorable samples. An unscorable sample (``valid`` False) takes no part in
    its group's mean and std, gets advantage exactly 0 (so it carries only the KL term), and
    its reward may be anything, NaN included. A group with fewer than two valid samples gets
    advantage 0 everywhere (no baseline, and its unbiased std is undefined).

    Args:
        rewards: ``[B*G]`` rewards, ``G = group_size`` consecutive entries per prompt.
        group_size: ``G``, samples per prompt; at least 2.
        eps: added to the std before dividing (paper: 1e-4).
        scale: divide by the group std (GRPO) or not (Dr. GRPO).
        valid: ``[B*G]`` bool, True where the sample was scored; None means all valid.

    Returns:
        ``[B*G]`` advantages, same dtype as ``rewards`` (float32 for integer input).

    Raises:
        ValueError: ``group_size < 2``, a length that is not a multiple of ``group_size``,
            a ``valid`` of another shape, or non-finite rewards on valid samples (the
            message names their indices).
    """
    if valid is None:
        grouped = _grouped(rewards, group_size)  # [B, G]
        centered = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
        constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [B, 1]
        centered = torch.where(constant, torch.zeros_like(centered), centered)
        if scale:
            centered = centered / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
        return centered.reshape(-1)  # [B*G]

    if valid.shape != rewards.shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}; expected {tuple(rewards.shape)} like rewards")
    keep = valid.bool()  # [B*G]
    if not rewards.is_floating_point():
        rewards = rewards.float()
    # Invalid entries become 0 before validation so NaN/inf there is allowed.
    filled = torch.where(keep, rewards, torch.zeros_like(rewards))  # [B*G]
    grouped = _grouped(filled, group_size)  # [B, G]
    weights = keep.view(-1, group_size).to(grouped.dtype)  # [B, G]
    count = weights.sum(dim=1, keepdim=True)  # [B, 1]
    mean = (grouped * weights).sum(dim=1, keepdim=True) / count.clamp(min=1.0)  # [B, 1]
    centered = (grouped - mean) * weights  # [B, G]
    big = torch.finfo(grouped.dtype).max
    high = torch.where(keep.view_as(grouped), grouped, torch.full_like(grouped, -big)).amax(dim=1, keepdim=True)
    low = torch.where(keep.view_as(grouped), grouped, torch.full_like(grouped, big)).amin(dim=1, keepdim=True)
    degenerate = (count < 2) | (high == low)  # [B, 1]
    centered = torch.where(degenerate, torch.zeros_like(centered), centered)
    if scale:
        variance = (centered.square() * weights).sum(dim=1, keepdim=True) / (count - 1.0).clamp(min=1.0)
        centered = centered / (variance.sqrt() + eps)
    return centered.reshape(-1)  # [B*G]


def group_stats(rewards: Tensor, group_size: int, valid: Tensor | None = None) -> dict[str, Tensor]:
    """Detached scalar statistics of the reward groups, for logging.

    With ``valid`` (``[B*G]`` bool), only valid samples count: their rewards may be NaN
    elsewhere, and a group with fewer than two valid samples counts as zero-std (its
    advantages are all 0, as ``group_normalized`` gives them).

    Returns:
        ``reward_std_mean``: mean over groups of the unbiased within-group std (NaN-free
        groups with two or more valid samples only).
        ``zero_std_frac``: fraction of groups whose rewards are all equal; those groups
        get zero advantages and carry only the KL term (REFERENCE §5b, ``adv/zero_std_frac``).
    """
    with torch.no_grad():
        rewards = rewards.detach()
        keep = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.to(rewards.device).bool()
        if keep.shape != rewards.shape:
            raise ValueError(f"valid has shape {tuple(keep.shape)}; expected {tuple(rewards.shape)} like rewards")
        filled = torch.where(keep, rewards, torch.zeros_like(rewards))
        grouped = _grouped(filled, group_size)  # [B, G]
        weights = keep.view_as(grouped).to(grouped.dtype)  # [B, G]
        count = weights.sum(dim=1)  # [B]
        big = torch.finfo(grouped.dtype).max
        high = torch.where(weights > 0, grouped, torch.full_like(grouped, -big)).amax(dim=1)  # [B]
        low = torch.where(weights > 0, grouped, torch.full_like(grouped, big)).amin(dim=1)  # [B]
        constant = (count < 2) | (high == low)  # [B]
        mean = (grouped * weights).sum(dim=1) / count.clamp(min=1.0)  # [B]
        variance = ((grouped - mean[:, None]).square() * weights).sum(dim=1) / (count - 1.0).clamp(min=1.0)
        scored = count >= 2
        std_mean = variance.sqrt()[scored].mean() if scored.any() else torch.tensor(float("nan"))
        return {
            "reward_std_mean": std_mean.float(),
            "zero_std_frac": constant.float().mean(),
        }


def zero_std_groups(rewards: Tensor, group_size: int, valid: Tensor | None = None) -> Tensor:
    """``[B]`` bool: the groups whose valid rewards are all equal (fewer than two valid samples
    count as equal), i.e. those :func:`group_stats` counts in ``zero_std_frac``. Their advantages
    are all 0; dynamic sampling (DAPO, arXiv 2503.14476 §3.2) drops them.

    Args:
        rewards: ``[B*G]`` rewards, ``G = group_size`` consecutive entries per prompt (NaN allowed
            where ``valid`` is False).
        group_size: ``G``.
        valid: ``[B*G]`` bool, True where the sample was scored; None means all valid.
    """
    with torch.no_grad():
        rewards = rewards.detach()
        keep = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.to(rewards.device).bool()
        if keep.shape != rewards.shape:
            raise ValueError(f"valid has shape {tuple(keep.shape)}; expected {tuple(rewards.shape)} like rewards")
        grouped = _grouped(torch.where(keep, rewards, torch.zeros_like(rewards)), group_size)  # [B, G]
        kept = keep.view_as(grouped)  # [B, G]
        big = torch.finfo(grouped.dtype).max
        high = torch.where(kept, grouped, torch.full_like(grouped, -big)).amax(dim=1)  # [B]
        low = torch.where(kept, grouped, torch.full_like(grouped, big)).amin(dim=1)  # [B]
        return (kept.sum(dim=1) < 2) | (high == low)  # [B]
