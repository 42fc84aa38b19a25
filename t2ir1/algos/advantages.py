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


def group_normalized(rewards: Tensor, group_size: int, eps: float = 1e-4, scale: bool = True) -> Tensor:
    """Advantages normalised within each group of ``group_size`` samples of one prompt.

    ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` with the unbiased (``n - 1``) std,
    as in T2I-R1 (REFERENCE §2.5). With ``scale=False`` only the mean is removed,
    ``A_i = r_i - mean(r_group)`` (Dr. GRPO, arXiv 2503.20783), which does not up-weight
    groups whose rewards barely differ.

    A group whose rewards are all equal gets advantages of exactly 0 (never NaN, and no
    rounding residue of the mean divided by ``eps``).

    Args:
        rewards: ``[B*G]`` rewards, ``G = group_size`` consecutive entries per prompt.
        group_size: ``G``, samples per prompt; at least 2.
        eps: added to the std before dividing (paper: 1e-4).
        scale: divide by the group std (GRPO) or not (Dr. GRPO).

    Returns:
        ``[B*G]`` advantages, same dtype as ``rewards`` (float32 for integer input).

    Raises:
        ValueError: ``group_size < 2``, a length that is not a multiple of ``group_size``,
            or non-finite rewards (the message names their indices).
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [B, 1]
    centered = torch.where(constant, torch.zeros_like(centered), centered)
    if scale:
        centered = centered / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centered.reshape(-1)  # [B*G]


def group_stats(rewards: Tensor, group_size: int) -> dict[str, Tensor]:
    """Detached scalar statistics of the reward groups, for logging.

    Returns:
        ``reward_std_mean``: mean over groups of the unbiased within-group std.
        ``zero_std_frac``: fraction of groups whose rewards are all equal; those groups
        get zero advantages and carry only the KL term (REFERENCE §5b, ``adv/zero_std_frac``).
    """
    with torch.no_grad():
        grouped = _grouped(rewards.detach(), group_size)  # [B, G]
        constant = grouped.amax(dim=1) == grouped.amin(dim=1)  # [B]
        return {
            "reward_std_mean": grouped.std(dim=1, unbiased=True).mean().float(),
            "zero_std_frac": constant.float().mean(),
        }
