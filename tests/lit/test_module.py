"""The LightningModule on the tiny Janus: what one step changes, the options of the
algorithm, and a unit-level learning test."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from t2ir1.data.records import PromptRecord
from t2ir1.lit.module import BiCoTGRPOModule, GRPOSettings
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.ensemble import RewardEnsemble


class BrightnessReward:
    """Mean pixel brightness in [0, 1]: a real function of the decoded image that varies
    between samples, so advantages are never all zero."""

    name = "brightness"

    def setup(self, device="cpu"):
        pass

    def __call__(self, records, images):
        scores = torch.tensor([sum(img.convert("L").getdata()) / (255.0 * img.width * img.height) for img in images])
        return RewardOutput(self.name, scores.float())


RECORDS = [
    PromptRecord(prompt="a red cube", task_type="object", nouns=("cube",), prompt_id="p0"),
    PromptRecord(prompt="two blue balls", task_type="object", nouns=("ball",), prompt_id="p1"),
]


def make_module(policy, **overrides) -> BiCoTGRPOModule:
    settings = GRPOSettings(**{"group_size": 4, "max_new_tokens": 6, "seed": 0, **overrides})
    reward = RewardEnsemble({"brightness": BrightnessReward()}, {"brightness": 1.0})
    module = BiCoTGRPOModule(policy, reward, settings, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    module.configure_model()
    module._setup_reward()
    return module


def one_step(module, records=RECORDS):
    rollout = module.rollout(records, step=0)
    module.score(rollout)
    module.advantages(rollout)
    module.prepare(rollout)
    loss, diagnostics = module.update(rollout)
    return rollout, loss, diagnostics


def test_one_training_step_changes_every_trainable_parameter_and_no_frozen_one(tiny_policy, tmp_path):
    module = make_module(tiny_policy)
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    ref_before = {n: p.detach().clone() for n, p in module.reference.named_parameters()}

    class OneBatch(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return RECORDS[i]

    loader = torch.utils.data.DataLoader(OneBatch(), batch_size=2, collate_fn=list)
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=loader)
    trainable = {n for n, p in module.policy.named_parameters() if p.requires_grad}
    for name, param in module.policy.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if name in trainable:
            assert changed, f"trainable {name} did not change"
        else:
            assert not changed, f"frozen {name} changed"
    for name, param in module.reference.named_parameters():
        assert torch.equal(ref_before[name], param), f"reference {name} changed"
    assert "train/loss" in trainer.callback_metrics and "reward/brightness" in trainer.callback_metrics


def test_first_update_has_ratio_exactly_one_and_no_clipping(tiny_policy):
    _, loss, diagnostics = one_step(make_module(tiny_policy))
    assert diagnostics["ratio_mean"].item() == 1.0
    assert diagnostics["clip_frac"].item() == 0.0
    assert torch.isfinite(loss)
    assert diagnostics["kl"].abs().item() < 1e-6  # the policy still equals the reference


def test_beta_zero_builds_no_reference_and_runs_no_reference_forward(tiny_policy):
    module = make_module(tiny_policy, beta=0.0)
    assert module.reference is None
    rollout, _, diagnostics = one_step(module)
    assert rollout.ref_logp is None and diagnostics["kl"].item() == 0.0


def test_token_level_only_samples_no_cot(tiny_policy):
    module = make_module(tiny_policy, levels=["token"])
    rollout, _, _ = one_step(module)
    assert rollout.semantic is None and set(rollout.cots) == {None}
    logp, mask = module.sequence_logprobs(rollout, module.policy)
    assert logp.shape == (8, tiny_policy.num_image_tokens) and mask.all()


def test_semantic_level_only_trains_text_tokens_only(tiny_policy):
    module = make_module(tiny_policy, levels=["semantic"])
    rollout, _, _ = one_step(module)
    logp, mask = module.sequence_logprobs(rollout, module.policy)
    assert logp.shape == rollout.semantic.completion_ids.shape
    assert torch.equal(mask, rollout.semantic.completion_mask)


def test_text_and_image_tokens_are_concatenated_and_image_tokens_never_masked(tiny_policy):
    module = make_module(tiny_policy, new_generations_image=2)
    rollout, _, _ = one_step(module)
    n_rows = len(RECORDS) * 4 * 2
    assert rollout.image_tokens.shape == (n_rows, tiny_policy.num_image_tokens)
    logp, mask = module.sequence_logprobs(rollout, module.policy)
    text_len = rollout.semantic.completion_ids.shape[1]
    assert logp.shape == (n_rows, text_len + tiny_policy.num_image_tokens)
    assert mask[:, text_len:].all()
    # the two images of one completion share its text tokens
    assert torch.equal(mask[0, :text_len], mask[1, :text_len])


def test_rollout_reuse_with_ppo_clipping(tiny_policy):
    module = make_module(tiny_policy, num_iterations=2, beta=0.0)
    rollout, fresh = module._next_rollout(RECORDS)
    assert fresh and rollout.old_logp is not None
    optimizer = torch.optim.SGD(module.policy.trainable_parameters(), lr=5.0)
    loss, diag = module.update(rollout)
    assert diag["ratio_mean"].item() == pytest.approx(1.0, abs=1e-5)
    loss.backward()
    optimizer.step()
    module._micro_step += 1
    again, fresh = module._next_rollout(RECORDS)
    assert again is rollout and not fresh
    _, diag = module.update(again)
    assert abs(diag["ratio_mean"].item() - 1.0) > 1e-4  # off-policy on the second update


def test_a_token_level_reward_raises_its_favoured_tokens_probability(tiny_policy):
    """Reward = fraction of image tokens among the favoured codes (the first quarter of the
    codebook): over a few GRPO steps the policy's probability mass on those codes must rise."""
    from t2ir1.policy.logprobs import positions_from_mask

    module = make_module(tiny_policy, levels=["token"], group_size=8, beta=0.0, image_temperature=1.0, cfg_weight=1.0)
    optimizer = torch.optim.Adam(module.policy.trainable_parameters(), lr=1e-2)
    favoured = torch.arange(tiny_policy.model.config.vq_config.num_embeddings // 4)
    ids, mask = tiny_policy.encode_image_prompts([r.prompt for r in RECORDS], [None, None])

    def favoured_mass() -> float:
        with torch.no_grad():
            h = tiny_policy.language_model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).last_hidden_state[:, -1]
            return torch.softmax(tiny_policy.generation_head(h), -1)[:, favoured].sum(-1).mean().item()

    start = favoured_mass()  # ~0.25 for the near-uniform random model
    for step in range(10):
        rollout = module.rollout(RECORDS, step=step)
        rollout.rewards = RewardOutput("favoured", torch.isin(rollout.image_tokens, favoured).float().mean(1))
        module.advantages(rollout)
        module.prepare(rollout)
        loss, _ = module.update(rollout)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = favoured_mass()
    assert end > start + 0.15, (start, end)


def test_rewards_scored_while_generating_equal_rewards_scored_after(tiny_policy):
    """reward.async=true scores each decoded chunk during generation: same rewards and loss."""
    results = []
    for overlapped in (False, True):
        module = make_module(tiny_policy)
        module.reward = RewardEnsemble({"brightness": BrightnessReward()}, {"brightness": 1.0}, **{"async": overlapped})
        module.engine.options = dataclasses.replace(module.sampling, chunk_rows=4)  # 2 chunks of 4 rows
        rollout = module.rollout(RECORDS, step=0)
        assert (rollout.rewards is not None) == overlapped  # scored during the rollout when overlapped
        _, loss, _ = one_step(module)
        results.append((module.score(rollout).scores, loss))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1])
