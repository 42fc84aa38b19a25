"""BiCoT-GRPO loss: hand-worked values, gradients, KL, clipping, masking, aggregations."""

import math

import pytest
import torch

from t2ir1.algos.losses import AGGREGATIONS, bicot_grpo_loss, loss_normalizer

# Two rows, T = 3; row 0 has 2 real tokens, row 1 has 3: sum(mask) = 5.
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
ADVANTAGES = torch.tensor([1.0, -2.0])


def _logp(seed: int = 0, shape=(2, 3)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (-torch.rand(shape, generator=generator) * 3.0).requires_grad_(True)


def test_first_iteration_value_and_gradient():
    # ratio == 1, beta == 0: loss = -(sum_i A_i * len_i) / sum(mask) = -(1*2 - 2*3) / 5 = 0.8,
    # and d loss / d logp[i, t] = -A_i * mask[i, t] / 5.
    logp = _logp()
    loss, diagnostics = bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0)
    torch.testing.assert_close(loss, torch.tensor(0.8))
    assert diagnostics["ratio_mean"].item() == 1.0
    assert diagnostics["clip_frac"].item() == 0.0
    assert diagnostics["kl"].item() == 0.0
    loss.backward()
    expected_grad = -ADVANTAGES.unsqueeze(1) * MASK / 5.0
    torch.testing.assert_close(logp.grad, expected_grad)


def test_explicit_detached_old_logp_equals_none():
    logp = _logp(1)
    loss_none, _ = bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0)
    loss_old, diagnostics = bicot_grpo_loss(logp, logp.detach(), None, ADVANTAGES, MASK, beta=0.0)
    assert loss_none.item() == loss_old.item()
    assert diagnostics["ratio_mean"].item() == 1.0


def test_aggregations_hand_worked():
    # Per-token loss is -A_i: row 0 -> -1 on 2 tokens, row 1 -> +2 on 3 tokens.
    # sequence_mean = mean(-1, 2) = 0.5; dr_grpo with a constant row length of 5 (not the
    # batch width 3, the old, batch-dependent value 4/6) = (-2 + 6) / (2 * 5) = 0.4.
    logp = _logp()
    expected = {"token_mean": 0.8, "sequence_mean": 0.5, "dr_grpo": 0.4}
    for aggregation, value in expected.items():
        loss, diagnostics = bicot_grpo_loss(
            logp, None, None, ADVANTAGES, MASK, beta=0.0, aggregation=aggregation, max_tokens_per_row=5
        )
        assert loss.item() == pytest.approx(value, abs=1e-6), aggregation
        assert diagnostics["pg_loss"].item() == pytest.approx(value, abs=1e-6), aggregation


def test_kl_hand_worked():
    # ref - logp = ln 2 everywhere: k3 = 2 - ln 2 - 1 = 0.30685; A = 0 -> loss = beta * kl = 0.5 * 0.30685.
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    ref = logp.detach() + math.log(2.0)
    loss, diagnostics = bicot_grpo_loss(logp, None, ref, torch.zeros(2), MASK, beta=0.5)
    assert diagnostics["kl"].item() == pytest.approx(1.0 - math.log(2.0), abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * (1.0 - math.log(2.0)), abs=1e-6)
    # d kl / d logp = -exp(ref - logp) + 1 = -1 -> d loss / d logp = beta * (-1) / 5 on real tokens.
    loss.backward()
    torch.testing.assert_close(logp.grad, -0.5 * MASK / 5.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_zero_at_reference_and_positive_elsewhere(seed):
    logp = _logp(seed)
    _, same = bicot_grpo_loss(logp, None, logp.detach().clone(), ADVANTAGES, MASK, beta=0.01)
    assert same["kl"].item() == pytest.approx(0.0, abs=1e-7)
    _, other = bicot_grpo_loss(logp, None, _logp(seed + 10).detach(), ADVANTAGES, MASK, beta=0.01)
    assert other["kl"].item() > 1e-4


def test_beta_zero_or_no_reference_drops_kl():
    logp = _logp(3)
    ref = _logp(4).detach()
    loss_beta0, diag_beta0 = bicot_grpo_loss(logp, None, ref, ADVANTAGES, MASK, beta=0.0)
    loss_noref, diag_noref = bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.01)
    loss_kl, diag_kl = bicot_grpo_loss(logp, None, ref, ADVANTAGES, MASK, beta=0.01)
    assert loss_beta0.item() == loss_noref.item() == pytest.approx(0.8)
    assert diag_beta0["kl"].item() == diag_noref["kl"].item() == 0.0
    assert loss_kl.item() > loss_noref.item()


def test_loss_falls_as_advantage_rises():
    logp = _logp(5)
    ref = _logp(6).detach()
    losses = [
        bicot_grpo_loss(logp, None, ref, torch.full((2,), advantage), MASK, beta=0.01)[0].item()
        for advantage in (-2.0, -0.5, 0.0, 0.5, 2.0)
    ]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))


def test_clipping_engages_out_of_range():
    # Row 0: ratio 1.5, A = +1 -> clipped to 1.2 (no gradient). Row 1: ratio 0.5, A = -1 -> clipped to 0.8.
    logp = torch.zeros(2, 1, requires_grad=True)
    old = torch.tensor([[math.log(1 / 1.5)], [math.log(1 / 0.5)]])
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1)
    loss, diagnostics = bicot_grpo_loss(logp, old, None, advantages, mask, beta=0.0)
    # surrogate = [1.2 * 1, 0.8 * -1] -> loss = -(1.2 - 0.8) / 2 = -0.2
    assert loss.item() == pytest.approx(-0.2, abs=1e-6)
    assert diagnostics["clip_frac"].item() == 1.0
    assert diagnostics["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.zeros(2, 1))


def test_clipping_inactive_on_the_pessimistic_side():
    # ratio 1.5 with A = -1: min(-1.5, -1.2) = -1.5 is the unclipped branch, so gradient flows.
    logp = torch.zeros(1, 1, requires_grad=True)
    old = torch.tensor([[math.log(1 / 1.5)]])
    loss, diagnostics = bicot_grpo_loss(logp, old, None, torch.tensor([-1.0]), torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(1.5, abs=1e-6)
    assert diagnostics["clip_frac"].item() == 0.0
    loss.backward()
    # d/dlogp of -(ratio * A) = -A * ratio = 1.5
    assert logp.grad.item() == pytest.approx(1.5, abs=1e-6)


def test_asymmetric_clip_range():
    # ratio 1.25 with A = +1: clipped by clip_eps_high = 0.2 (-> 1.2), not by 0.3.
    logp = torch.zeros(1, 1, requires_grad=True)
    old = torch.tensor([[math.log(1 / 1.25)]])
    args = (logp, old, None, torch.tensor([1.0]), torch.ones(1, 1))
    assert bicot_grpo_loss(*args, beta=0.0)[0].item() == pytest.approx(-1.2, abs=1e-6)
    assert bicot_grpo_loss(*args, beta=0.0, clip_eps_high=0.3)[0].item() == pytest.approx(-1.25, abs=1e-6)


def _loop_reference(logp, old, ref, advantages, mask, beta, aggregation):
    """Row-by-row, token-by-token version of the formula, for equivalence tests."""
    n_rows, n_cols = len(logp), len(logp[0])
    rows, lengths, total = [], [], 0.0
    for i in range(n_rows):
        row_sum, row_len = 0.0, 0.0
        for t in range(n_cols):
            if mask[i][t] == 0:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            surrogate = min(ratio * advantages[i], min(max(ratio, 0.8), 1.2) * advantages[i])
            d = ref[i][t] - logp[i][t]
            kl = math.exp(d) - d - 1.0
            row_sum += -(surrogate - beta * kl)
            row_len += 1.0
        rows.append(row_sum)
        lengths.append(row_len)
        total += row_sum
    if aggregation == "token_mean":
        return total / sum(lengths)
    if aggregation == "sequence_mean":
        return sum(s / max(n, 1.0) for s, n in zip(rows, lengths, strict=True)) / len(rows)
    return total / (n_rows * n_cols)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_vectorised_matches_loop(seed, aggregation):
    generator = torch.Generator().manual_seed(seed)
    n, t = 4, 7
    logp = -torch.rand(n, t, generator=generator, dtype=torch.float64) * 4
    old = logp + (torch.rand(n, t, generator=generator, dtype=torch.float64) - 0.5)  # ratios in ~[0.6, 1.6]
    ref = logp + (torch.rand(n, t, generator=generator, dtype=torch.float64) - 0.5)
    advantages = torch.randn(n, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=generator)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    loss, _ = bicot_grpo_loss(
        logp, old, ref, advantages, mask, beta=0.05, aggregation=aggregation, max_tokens_per_row=t
    )
    expected = _loop_reference(
        logp.tolist(), old.tolist(), ref.tolist(), advantages.tolist(), mask.int().tolist(), 0.05, aggregation
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_masked_out_tokens_change_nothing():
    logp = _logp(7)
    ref = _logp(8).detach()
    old = _logp(9).detach()
    loss, diagnostics = bicot_grpo_loss(logp, old, ref, ADVANTAGES, MASK.bool(), beta=0.01)
    loss.backward()
    grad = logp.grad.clone()

    # Padding may hold garbage, even -inf: value, diagnostics and gradient stay the same and finite.
    garbage = logp.detach().clone()
    garbage[0, 2] = float("-inf")
    garbage.requires_grad_(True)
    bad_ref, bad_old = ref.clone(), old.clone()
    bad_ref[0, 2], bad_old[0, 2] = 50.0, float("nan")
    loss2, diagnostics2 = bicot_grpo_loss(garbage, bad_old, bad_ref, ADVANTAGES, MASK, beta=0.01)
    loss2.backward()
    assert loss2.item() == loss.item()
    for key in diagnostics:
        assert diagnostics2[key].item() == diagnostics[key].item(), key
    torch.testing.assert_close(garbage.grad, grad)
    assert garbage.grad[0, 2].item() == 0.0


def test_diagnostics_are_detached_scalars():
    logp = _logp(10)
    _, diagnostics = bicot_grpo_loss(logp, None, _logp(11), ADVANTAGES, MASK, beta=0.01)
    assert set(diagnostics) == {"kl", "clip_frac", "ratio_mean", "adv_std", "pg_loss", "normalizer"}
    for key, value in diagnostics.items():
        assert value.dim() == 0 and not value.requires_grad and value.dtype == torch.float32, key
    # population std of [1, -2] = 1.5
    assert diagnostics["adv_std"].item() == pytest.approx(1.5)


def test_bfloat16_input_is_computed_in_float32():
    logp = _logp(12).to(torch.bfloat16).detach().requires_grad_(True)
    loss, _ = bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.8)
    loss.backward()
    assert logp.grad.dtype == torch.bfloat16


def test_bad_inputs_raise_clear_errors():
    logp = _logp()
    with pytest.raises(ValueError, match="aggregation 'mean' is unknown"):
        bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0, aggregation="mean")
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\)"):
        bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK[:, :2], beta=0.0)
    with pytest.raises(ValueError, match=r"advantages must be \[N\] = \[2\]"):
        bicot_grpo_loss(logp, None, None, ADVANTAGES.unsqueeze(1), MASK, beta=0.0)
    with pytest.raises(ValueError, match="mask selects no tokens"):
        bicot_grpo_loss(logp, None, None, ADVANTAGES, torch.zeros(2, 3), beta=0.0)


def test_dr_grpo_normaliser_is_constant_across_batch_widths():
    # The same two rows padded to width 3 and to width 6 give the same Dr. GRPO loss
    # (the old mask.numel() normaliser gave 4/6 and 4/12).
    logp = _logp()
    wide_logp = torch.cat([logp, torch.zeros(2, 3)], dim=1)
    wide_mask = torch.cat([MASK, torch.zeros(2, 3)], dim=1)
    narrow, _ = bicot_grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0, aggregation="dr_grpo", max_tokens_per_row=8)
    wide, _ = bicot_grpo_loss(
        wide_logp, None, None, ADVANTAGES, wide_mask, beta=0.0, aggregation="dr_grpo", max_tokens_per_row=8
    )
    assert narrow.item() == pytest.approx(4.0 / 16.0, abs=1e-6)
    assert wide.item() == pytest.approx(narrow.item(), abs=1e-7)


def test_dr_grpo_requires_a_constant_normaliser():
    with pytest.raises(ValueError, match="max_tokens_per_row"):
        bicot_grpo_loss(_logp(), None, None, ADVANTAGES, MASK, beta=0.0, aggregation="dr_grpo")
    with pytest.raises(ValueError, match="smaller than the batch width"):
        bicot_grpo_loss(_logp(), None, None, ADVANTAGES, MASK, beta=0.0, aggregation="dr_grpo", max_tokens_per_row=2)


def test_log_ratios_are_clamped_before_exp():
    # An off-policy log-ratio of 200 overflows exp in float32 (inf -> NaN loss) without the clamp.
    logp = torch.zeros(1, 2, requires_grad=True)
    old = torch.full((1, 2), -200.0)
    ref = torch.full((1, 2), 200.0)
    mask = torch.ones(1, 2)
    loss, diagnostics = bicot_grpo_loss(logp, old, ref, torch.tensor([-1.0]), mask, beta=0.01)
    assert torch.isfinite(loss)
    assert torch.isfinite(diagnostics["ratio_mean"])
    assert diagnostics["ratio_mean"].item() == pytest.approx(math.exp(20.0), rel=1e-4)
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_loss_normalizers_hand_worked():
    # MASK: rows of 2 and 3 real tokens, width 3. token_mean: 5 tokens; sequence_mean: 2 rows;
    # dr_grpo: 2 rows x a constant 5 = 10 (never the padded 2 x 3 = 6).
    assert loss_normalizer("token_mean", MASK).item() == 5.0
    assert loss_normalizer("sequence_mean", MASK).item() == 2.0
    assert loss_normalizer("dr_grpo", MASK, max_tokens_per_row=5).item() == 10.0
    with pytest.raises(ValueError, match="unknown_agg"):
        loss_normalizer("unknown_agg", MASK)


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_a_shared_normaliser_makes_split_batches_equal_to_their_union(aggregation):
    # Rows 0 and 1 as two micro-batches (or ranks) of one row each: with each part divided by
    # the union's normaliser, the sum of the parts' losses and gradients is the union's
    # (with own normalisers it is not for token_mean: row 0 has 2 tokens, row 1 has 3).
    logp = _logp(3)
    ref = _logp(4).detach()
    union, _ = bicot_grpo_loss(logp, None, ref, ADVANTAGES, MASK, beta=0.1, aggregation=aggregation, max_tokens_per_row=5)
    (union_grad,) = torch.autograd.grad(union, logp)
    total = loss_normalizer(aggregation, MASK, 5)
    parts = [
        bicot_grpo_loss(
            logp[i : i + 1], None, ref[i : i + 1], ADVANTAGES[i : i + 1], MASK[i : i + 1], beta=0.1,
            aggregation=aggregation, max_tokens_per_row=5, normalizer=total,
        )[0]
        for i in (0, 1)
    ]
    (split_grad,) = torch.autograd.grad(parts[0] + parts[1], logp)
    assert (parts[0] + parts[1]).item() == pytest.approx(union.item(), rel=1e-6)
    torch.testing.assert_close(split_grad, union_grad)
    if aggregation == "token_mean":
        own = [
            bicot_grpo_loss(logp[i : i + 1], None, ref[i : i + 1], ADVANTAGES[i : i + 1], MASK[i : i + 1], beta=0.1)[0]
            for i in (0, 1)
        ]
        assert (own[0] + own[1]).item() / 2 != pytest.approx(union.item(), rel=1e-3)
