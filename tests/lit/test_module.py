"""The LightningModule on the tiny Janus: what one step changes, the options of the
algorithm, and a unit-level learning test."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from t2ir1.algos.settings import GRPOSettings
from t2ir1.data.records import PromptRecord
from t2ir1.lit.module import BiCoTGRPOModule
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.testing.tiny_rewards import BrightnessReward

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
    record = module.step_record(module.rollout(records, step=0))
    loss, diagnostics = module.update(record)
    return record, loss, diagnostics


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
    metrics = trainer.callback_metrics
    assert "train/loss" in metrics and "reward/brightness" in metrics
    # every phase of the step is timed, backward and optimiser step included; the whole step
    # (batch start to batch end) holds them all
    phases = ["rollout", "reward", "ref_logprobs", "update", "backward", "optimizer"]
    seconds = {phase: float(metrics[f"timing/{phase}"]) for phase in phases}
    assert all(value > 0 for value in seconds.values()), seconds
    assert float(metrics["timing/step"]) >= sum(seconds.values())
    # throughput: 2 prompts x G=4 = 8 images of num_image_tokens tokens each
    images, tokens = 8, 8 * tiny_policy.num_image_tokens
    assert float(metrics["perf/images_per_s"]) == pytest.approx(images / float(metrics["timing/step"]), rel=1e-5)
    assert float(metrics["perf/image_tokens_per_s"]) == pytest.approx(tokens / float(metrics["timing/step"]), rel=1e-5)
    assert float(metrics["perf/rollout_images_per_s"]) == pytest.approx(images / seconds["rollout"], rel=1e-5)
    assert float(metrics["perf/rollout_image_tokens_per_s"]) == pytest.approx(tokens / seconds["rollout"], rel=1e-5)


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


def test_token_level_only_with_cot_samples_the_cot_but_trains_image_tokens_only(tiny_policy):
    """The paper's "token only": the image is drawn from prompt + sampled CoT; only its tokens are trained."""
    module = make_module(tiny_policy, levels=["token"], use_cot=True)
    rollout, loss, _ = one_step(module)
    assert rollout.semantic is not None and all(isinstance(cot, str) for cot in rollout.cots)
    logp, mask = module.sequence_logprobs(rollout, module.policy)
    assert logp.shape == (8, tiny_policy.num_image_tokens) and mask.all()
    # the CoT is in the image prompt the image tokens were scored under
    bare = make_module(tiny_policy, levels=["token"])
    assert rollout.generation.image_prompt_ids.shape[1] > bare.rollout(RECORDS, step=0).generation.image_prompt_ids.shape[1]
    loss.backward()
    assert all(p.grad is None or not p.grad.abs().sum() for p in module.policy.lm_head.parameters())


def test_use_cot_false_with_the_semantic_level_is_refused():
    with pytest.raises(ValueError, match="use_cot=false contradicts"):
        GRPOSettings(levels=["semantic", "token"], use_cot=False)


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


class StepRecorder(L.Callback):
    """Per micro-batch: the prompts trained on, the rollout object used, ratio_mean, and the
    gradients left after the optimiser step's hooks ran (only on stepping micro-batches)."""

    def __init__(self):
        self.prompts, self.rollouts, self.ratios, self.grads = [], [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.prompts.append([r.prompt_id for r in batch])
        self.rollouts.append(outputs["record"])
        self.ratios.append(float(trainer.callback_metrics["train/ratio_mean"]))
        grads = {n: p.grad.clone() for n, p in pl_module.policy.named_parameters() if p.grad is not None}
        self.grads.append(grads)


def _trainer(tmp_path, recorder, max_steps, accumulate=1):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path, accumulate_grad_batches=accumulate,
        callbacks=[recorder], gradient_clip_val=None,
    )


FOUR = [
    PromptRecord(prompt=f"a {colour} cube", task_type="object", nouns=("cube",), prompt_id=f"q{i}")
    for i, colour in enumerate(["red", "green", "blue", "white"])
]


def test_rollout_reuse_trains_every_prompt_of_distinct_batches(tiny_policy, tmp_path):
    """num_iterations=2, accumulation 2, four distinct one-prompt batches: the loader serves
    q0 q1 q0 q1 q2 q3 q2 q3; each batch is sampled once and reused once, off-policy on reuse
    (the old in-module buffer trained q0 q1 q0 q1 and dropped q2, q3)."""
    from t2ir1.data.datamodule import PromptDataModule
    from t2ir1.lit.checkpointing import ResumableData

    module = make_module(tiny_policy, num_iterations=2, beta=0.0, levels=["token"], group_size=2)
    data = ResumableData(PromptDataModule(lambda: FOUR, batch_size=1, shuffle=False), repeats=2)
    recorder = StepRecorder()
    _trainer(tmp_path, recorder, max_steps=4, accumulate=2).fit(module, datamodule=data)
    assert recorder.prompts == [["q0"], ["q1"], ["q0"], ["q1"], ["q2"], ["q3"], ["q2"], ["q3"]]
    rollouts = recorder.rollouts
    for first, again in ((0, 2), (1, 3), (4, 6), (5, 7)):
        assert rollouts[again] is rollouts[first]
    assert len({id(r) for r in rollouts}) == 4
    # first servings are on-policy (ratio 1); repeats follow an optimiser step: off-policy
    assert [recorder.ratios[i] for i in (0, 1, 4, 5)] == [1.0, 1.0, 1.0, 1.0]
    assert all(abs(recorder.ratios[i] - 1.0) > 1e-6 for i in (2, 3, 6, 7))
    assert module._pending_rollouts == {}


def test_num_iterations_without_a_repeating_loader_is_a_clear_error(tiny_policy):
    module = make_module(tiny_policy, num_iterations=2)
    with pytest.raises(ValueError, match="serve every batch 2 times"):
        module.rollout_for(list(RECORDS))


def test_unscorable_samples_leave_the_baseline_and_get_advantage_zero(tiny_policy):
    from t2ir1.lit.module import Rollout
    from t2ir1.rollout.engine import Generation

    class Fixed:
        name = "fixed"

        def setup(self, device="cpu"):
            pass

        def __call__(self, records, images):
            return RewardOutput(self.name, torch.tensor([1.0, float("nan"), 3.0, 5.0, 2.0, 2.0, 2.0, 4.0]))

    module = make_module(tiny_policy)
    module.reward = RewardEnsemble({"fixed": Fixed()}, {"fixed": 1.0}, nan_policy="drop")
    # only the scores matter here: a placeholder generation of 8 one-token rows
    rows = torch.zeros(8, 1, dtype=torch.long)
    generation = Generation(["a", "b"], 4, 1, [None] * 8, rows, rows + 1, rows, rows.float(), [None] * 8)
    rollout = Rollout([r for r in RECORDS for _ in range(4)], generation)
    advantages = module.advantages(module.score(rollout))
    # group 0: valid rewards 1, 3, 5 -> mean 3, unbiased std 2 -> (-2, 0, 2) / 2; the NaN sample gets 0 and does
    # not pull the mean (counted as 0 it would give mean 2.25 and itself -2.25 / std)
    expected0 = [-2.0 / (2.0 + 1e-4), 0.0, 0.0, 2.0 / (2.0 + 1e-4)]
    # group 1: rewards 2, 2, 2, 4 -> mean 2.5, std 1 -> (-0.5, -0.5, -0.5, 1.5) / (1 + 1e-4)
    expected1 = [v / (1.0 + 1e-4) for v in (-0.5, -0.5, -0.5, 1.5)]
    torch.testing.assert_close(advantages, torch.tensor(expected0 + expected1))
    assert advantages[1].item() == 0.0


def _grads_after_one_step(tiny_dir, tmp_path, batches, accumulate, token_normalizer):
    from t2ir1.policy.janus import JanusPolicy

    policy = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True)  # fresh weights every run
    module = make_module(policy, group_size=2, token_normalizer=token_normalizer)
    recorder = StepRecorder()
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=list)
    _trainer(tmp_path, recorder, max_steps=1, accumulate=accumulate).fit(module, train_dataloaders=loader)
    return recorder.grads[-1], recorder


@pytest.mark.slow  # three one-step runs of the tiny model with semantic CoT: ~40 s on a busy machine
def test_global_token_mean_gradient_does_not_depend_on_accumulation_split(tiny_dir, tmp_path):
    """One micro-batch of three prompts vs micro-batches of one and two prompts (semantic +
    token levels, so token counts differ between micro-batches): with token_normalizer=global
    the step's gradient is the same; with local (the original: each micro-batch's own token
    mean, the means averaged) the lone prompt weighs twice as much and the gradient differs."""
    three = FOUR[:3]
    union, _ = _grads_after_one_step(tiny_dir, tmp_path / "union", [three], 1, "global")
    split, recorder = _grads_after_one_step(tiny_dir, tmp_path / "split", [three[:1], three[1:]], 2, "global")
    token_counts = [r.semantic.completion_mask.sum().item() for r in recorder.rollouts]
    assert token_counts[0] != token_counts[1], "test needs micro-batches of different token counts"
    assert union.keys() == split.keys() and union
    def relative_error(grads, name):
        return ((grads[name] - union[name]).norm() / union[name].norm().clamp_min(1e-12)).item()

    # same samples, summed in another order: equal up to float rounding
    assert max(relative_error(split, name) for name in union) < 1e-5
    local, _ = _grads_after_one_step(tiny_dir, tmp_path / "local", [three[:1], three[1:]], 2, "local")
    assert max(relative_error(local, name) for name in union) > 1e-2


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
        rewards = RewardOutput("favoured", torch.isin(rollout.image_tokens, favoured).float().mean(1))
        loss, _ = module.update(module.step_record(rollout, rewards=rewards))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = favoured_mass()
    assert end > start + 0.15, (start, end)


def test_checkpoint_state_leaves_out_the_frozen_reference_and_loads_strictly(tiny_policy):
    module = make_module(tiny_policy)
    state = module.state_dict()
    assert any(k.startswith("policy.") for k in state)
    assert not any(k.startswith("reference.") for k in state)
    # strict loading accepts it: the reference keeps the weights configure_model built
    reference_before = {n: p.detach().clone() for n, p in module.reference.named_parameters()}
    assert module.load_state_dict(state, strict=True).missing_keys == []
    for name, param in module.reference.named_parameters():
        assert torch.equal(param, reference_before[name]), name
    # a policy key missing is still an error
    del state[next(k for k in state if k.startswith("policy."))]
    with pytest.raises(RuntimeError, match="Missing key"):
        module.load_state_dict(state, strict=True)


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
