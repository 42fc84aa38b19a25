"""Group-normalised advantages: hand-worked values and GRPO invariants."""

import pytest
import torch

from t2ir1.algos.advantages import group_normalized, group_stats, zero_std_groups


def test_hand_worked_values():
    # Groups [1, 2] and [3, 4]: mean 1.5 / 3.5, unbiased std sqrt(((0.5)^2 + (0.5)^2) / 1) = 0.70711.
    # A = (+-0.5) / (0.70711 + 1e-4) = +-0.70701.
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = torch.tensor([-0.5, 0.5, -0.5, 0.5]) / (2**-0.5 + 1e-4)
    torch.testing.assert_close(group_normalized(rewards, group_size=2), expected)
    assert abs(expected[1].item() - 0.70701) < 1e-4


def test_hand_worked_group_of_four():
    # [0, 0, 1, 1]: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735.
    # A = +-0.5 / (0.57735 + 1e-4) = +-0.86588.
    advantages = group_normalized(torch.tensor([0.0, 0.0, 1.0, 1.0]), group_size=4)
    torch.testing.assert_close(advantages, torch.tensor([-1.0, -1.0, 1.0, 1.0]) * 0.5 / (3**-0.5 + 1e-4))


def test_unscaled_is_mean_removed_only():
    # Dr. GRPO: [1, 2 | 3, 7] -> means 1.5, 5 -> [-0.5, 0.5, -2, 2].
    advantages = group_normalized(torch.tensor([1.0, 2.0, 3.0, 7.0]), group_size=2, scale=False)
    torch.testing.assert_close(advantages, torch.tensor([-0.5, 0.5, -2.0, 2.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [True, False])
def test_groups_sum_to_zero_and_match_loop(seed, scale):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(5 * 8, generator=generator, dtype=torch.float64)
    advantages = group_normalized(rewards, group_size=8, scale=scale)
    torch.testing.assert_close(advantages.view(5, 8).sum(dim=1), torch.zeros(5, dtype=torch.float64))
    for index in range(5):
        group = rewards[index * 8 : (index + 1) * 8]
        expected = group - group.mean()
        if scale:
            expected = expected / (group.std() + 1e-4)
        torch.testing.assert_close(advantages[index * 8 : (index + 1) * 8], expected)


def test_equal_rewards_give_exact_zero():
    # 0.1 * 3 is not exactly representable: a naive mean leaves a residue that eps would blow up.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 0.5])
    advantages = group_normalized(rewards, group_size=3)
    assert torch.equal(advantages[:3], torch.zeros(3))
    assert torch.isfinite(advantages).all()
    assert advantages[4] > 0 > advantages[3]


def test_higher_reward_gets_higher_advantage():
    advantages = group_normalized(torch.tensor([0.2, 0.9, 0.5, 0.1]), group_size=4)
    assert torch.equal(advantages.argsort(), torch.tensor([3, 0, 2, 1]))


def test_group_stats():
    # Groups [1, 1], [2, 4], [5, 5]: std 0, sqrt(2), 0 -> mean sqrt(2)/3 = 0.47140; 2 of 3 constant.
    stats = group_stats(torch.tensor([1.0, 1.0, 2.0, 4.0, 5.0, 5.0]), group_size=2)
    torch.testing.assert_close(stats["reward_std_mean"], torch.tensor(2**0.5 / 3))
    torch.testing.assert_close(stats["zero_std_frac"], torch.tensor(2 / 3))
    assert all(not value.requires_grad and value.dim() == 0 for value in stats.values())


def test_zero_std_groups_are_the_groups_zero_std_frac_counts():
    # Groups [1, 1], [2, 4], [5, 5]: the first and last are constant.
    rewards = torch.tensor([1.0, 1.0, 2.0, 4.0, 5.0, 5.0])
    assert zero_std_groups(rewards, group_size=2).tolist() == [True, False, True]
    # with validity: [3, NaN, 3] is constant over its valid samples, [1, 2, NaN] is not, [7, NaN, NaN]
    # has one valid sample (no baseline: counts as constant)
    rewards = torch.tensor([3.0, float("nan"), 3.0, 1.0, 2.0, float("nan"), 7.0, float("nan"), float("nan")])
    valid = ~torch.isnan(rewards)
    flags = zero_std_groups(rewards, group_size=3, valid=valid)
    assert flags.tolist() == [True, False, True]
    torch.testing.assert_close(group_stats(rewards, 3, valid=valid)["zero_std_frac"], flags.float().mean())
    # and exactly those groups get advantage 0 everywhere
    advantages = group_normalized(rewards, 3, valid=valid).view(3, 3)
    assert advantages[flags].abs().sum() == 0 and advantages[~flags].abs().sum() > 0


def test_group_size_one_is_rejected():
    with pytest.raises(ValueError, match="at least 2 samples"):
        group_normalized(torch.tensor([1.0, 2.0]), group_size=1)


def test_length_not_multiple_of_group_size():
    with pytest.raises(ValueError, match="multiple of group_size=2"):
        group_normalized(torch.tensor([1.0, 2.0, 3.0]), group_size=2)


def test_nan_rewards_are_named():
    with pytest.raises(ValueError, match=r"indices \[1, 3\]"):
        group_normalized(torch.tensor([1.0, float("nan"), 3.0, float("nan")]), group_size=2)
    with pytest.raises(ValueError, match=r"indices \[2\]"):
        group_stats(torch.tensor([1.0, 2.0, float("inf"), 0.0]), group_size=2)


def test_gradient_does_not_flow_into_rewards_from_stats():
    rewards = torch.tensor([1.0, 2.0], requires_grad=True)
    assert not group_stats(rewards, group_size=2)["reward_std_mean"].requires_grad


def test_invalid_samples_leave_the_baseline_and_get_zero():
    # Group [1, 3, NaN(invalid), 5]: valid mean 3, unbiased std 2 -> (-1, 0, 0, 1) (scale), invalid gets 0.
    # The old ensemble scored the unscorable sample 0: mean 2.25 and a spurious negative advantage.
    rewards = torch.tensor([1.0, 3.0, float("nan"), 5.0])
    valid = torch.tensor([True, True, False, True])
    advantages = group_normalized(rewards, group_size=4, eps=0.0, valid=valid)
    torch.testing.assert_close(advantages, torch.tensor([-1.0, 0.0, 0.0, 1.0]))
    centered = group_normalized(rewards, group_size=4, scale=False, valid=valid)
    torch.testing.assert_close(centered, torch.tensor([-2.0, 0.0, 0.0, 2.0]))
    old_way = group_normalized(torch.tensor([1.0, 3.0, 0.0, 5.0]), group_size=4, eps=0.0)
    assert old_way[2].item() < 0


def test_groups_with_fewer_than_two_valid_samples_get_zero():
    rewards = torch.tensor([0.7, float("inf"), float("nan"), float("nan"), 0.0, 1.0])
    valid = torch.tensor([True, False, False, False, True, True])
    advantages = group_normalized(rewards, group_size=2, valid=valid)
    assert advantages[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert advantages[4].item() < 0 < advantages[5].item()
    assert torch.isfinite(advantages).all()


def test_all_valid_mask_matches_no_mask():
    rewards = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.3, 0.3, 0.8, 0.0])
    for scale in (True, False):
        torch.testing.assert_close(
            group_normalized(rewards, 4, scale=scale, valid=torch.ones(8, dtype=torch.bool)),
            group_normalized(rewards, 4, scale=scale),
        )


def test_valid_shape_and_nonfinite_valid_rewards_are_errors():
    with pytest.raises(ValueError, match="valid has shape"):
        group_normalized(torch.ones(4), 2, valid=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="not finite"):
        group_normalized(torch.tensor([1.0, float("nan")]), 2, valid=torch.ones(2, dtype=torch.bool))
