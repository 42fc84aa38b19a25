"""LoRA (``model.lora``): only the adapters train, the reference is the base model under disabled
adapters (no copy), the generation engine samples from the adapted weights, export merges them."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from t2ir1.data.records import PromptRecord
from t2ir1.export import export_checkpoint
from t2ir1.lit.module import BiCoTGRPOModule, GRPOSettings
from t2ir1.policy.janus import AdapterFreeReference, JanusPolicy
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.rollout.engine import GenerationEngine
from t2ir1.testing.tiny_rewards import BrightnessReward

LORA = {"r": 4, "alpha": 8, "target_modules": None, "dropout": 0.0}
RECORDS = [
    PromptRecord(prompt="a red cube", task_type="object", nouns=("cube",), prompt_id="p0"),
    PromptRecord(prompt="two blue balls", task_type="object", nouns=("ball",), prompt_id="p1"),
]




def one_step(module, records=RECORDS):
    record = module.step_record(module.rollout(records, step=0))
    loss, diagnostics = module.update(record)
    return record, loss, diagnostics


def lora_policy(tiny_dir, **overrides) -> JanusPolicy:
    return JanusPolicy.from_pretrained(tiny_dir, local_files_only=True, lora={**LORA, **overrides})


def make_module(policy, **overrides) -> BiCoTGRPOModule:
    settings = GRPOSettings(**{"group_size": 4, "max_new_tokens": 6, "seed": 0, **overrides})
    reward = RewardEnsemble({"brightness": BrightnessReward()}, {"brightness": 1.0})
    module = BiCoTGRPOModule(policy, reward, settings, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    module.configure_model()
    module._setup_reward()
    return module


def train_steps(module, steps: int = 2):
    """``steps`` optimiser steps (two: LoRA's B starts at zero, so A moves from the second on)."""
    optimizer = module.configure_optimizers()
    for _ in range(steps):
        rollout, loss, _ = one_step(module)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rollout


def test_only_adapter_parameters_train_and_base_weights_stay_bit_identical(tiny_dir):
    module = make_module(lora_policy(tiny_dir))
    policy = module.policy
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x 7 projections x (A, B)
    assert len(trainable) == 2 * 7 * 2
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    train_steps(module)
    for name, param in policy.named_parameters():
        if name in trainable:
            assert not torch.equal(before[name], param), f"adapter {name} did not change"
        else:
            assert torch.equal(before[name], param), f"base weight {name} changed"


def test_reference_is_the_base_model_under_disabled_adapters_without_a_copy(tiny_dir):
    module = make_module(lora_policy(tiny_dir), beta=0.01)
    assert isinstance(module.reference, AdapterFreeReference)
    assert list(module.reference.parameters()) == []  # no second copy of the weights
    storages = [p.untyped_storage().data_ptr() for p in module.parameters()]
    assert len(storages) == len(set(storages))
    assert not any(k.startswith("reference.") for k in module.state_dict())
    rollout = train_steps(module)
    base = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True)
    reference_logp, mask = module.sequence_logprobs(rollout, module.reference)
    base_logp, _ = module.sequence_logprobs(rollout, base)
    torch.testing.assert_close(reference_logp, base_logp, rtol=0, atol=1e-6)
    # the trained policy itself is not the base any more (the test could fail)
    policy_logp, _ = module.sequence_logprobs(rollout, module.policy)
    assert (policy_logp - base_logp)[mask.bool()].abs().max() > 1e-3


@pytest.mark.parametrize(
    ("fuse", "dropout"),
    [(True, 0.0), (False, 0.0), (False, 0.3)],
    ids=["cpu-fused", "accelerator-path", "dropout-off-while-sampling"],
)
def test_rollout_samples_equal_those_of_the_merged_model_and_replay_matches(tiny_dir, monkeypatch, fuse, dropout):
    # fuse=False: the path accelerators take (peft's layers called as they are, no fused copies)
    original = GenerationEngine._refresh

    def refresh(self):
        if not self._weights_read:
            self.decoder.refresh(fuse=fuse)

    monkeypatch.setattr(GenerationEngine, "_refresh", refresh if not fuse else original)
    module = make_module(lora_policy(tiny_dir, dropout=dropout), cfg_weight=1.0)
    train_steps(module)
    module.policy.train()  # as inside fit: the engine samples without LoRA dropout all the same
    merged = copy.deepcopy(module.policy)
    merged.merge_lora()
    assert not merged.has_lora and not any("lora_" in n for n, _ in merged.named_parameters())
    prompts, seeds = [r.prompt for r in RECORDS], [11, 12]
    kwargs = {"group_size": 3, "use_cot": True, "reasoning_template": module.reasoning_template,
              "system_prompt": module.settings.system_prompt}
    adapted = module.engine.generate(prompts, seeds, **kwargs)
    plain = GenerationEngine(merged, module.sampling).generate(prompts, seeds, **kwargs)
    assert adapted.cots == plain.cots
    assert torch.equal(adapted.image_tokens, plain.image_tokens)
    torch.testing.assert_close(adapted.image_logp, plain.image_logp, rtol=0, atol=1e-5)
    assert module.policy.language_model.training  # the policy's mode is left as it was
    if dropout:
        return  # the training pass applies dropout by design: no exact replay
    # the training pass (peft's forward) replays the engine's log-probs at CFG 1
    _, _, diagnostics = one_step(module)
    assert diagnostics["rollout/logp_diff"] < 1e-4
    assert diagnostics["rollout/text_logp_diff"] < 1e-4


def test_export_merges_the_adapters_into_a_plain_janus_directory(tiny_dir, tmp_path):
    import lightning as L

    module = make_module(lora_policy(tiny_dir))
    train_steps(module)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict()}, ckpt)
    config = tmp_path / "run" / ".hydra" / "config.yaml"
    config.parent.mkdir(parents=True)
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "_partial_": True,
            "name_or_path": str(tiny_dir), "dtype": "float32", "lora": LORA}
    config.write_text(yaml.safe_dump({"model": node}))
    out = export_checkpoint(ckpt, tmp_path / "exported")
    loaded = JanusPolicy.from_pretrained(out, local_files_only=True)  # the users' loading code
    assert not loaded.has_lora and not any("lora_" in n or "base_layer" in n for n in loaded.state_dict())
    merged = copy.deepcopy(module.policy)
    merged.merge_lora()
    rollout, _, _ = one_step(module)
    torch.testing.assert_close(
        module.sequence_logprobs(rollout, loaded)[0], module.sequence_logprobs(rollout, merged)[0], rtol=0, atol=1e-6
    )


def test_resume_restores_adapters_strictly(tiny_dir):
    module = make_module(lora_policy(tiny_dir))
    train_steps(module)
    state = module.state_dict()
    fresh = make_module(lora_policy(tiny_dir))
    fresh.load_state_dict(state, strict=True)
    for (name, a), (_, b) in zip(module.policy.named_parameters(), fresh.policy.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("lora", "match"),
    [
        ({"r": 0}, "rank must be an integer >= 1"),
        ({"r": 4, "rank": 2}, "unknown keys"),
        ({"r": 4, "dropout": 1.5}, "dropout"),
        ({"r": 4, "target_modules": ["no_such_proj"]}, "target_modules"),
    ],
)
def test_bad_lora_settings_are_named(tiny_dir, lora, match):
    with pytest.raises(ValueError, match=match):
        JanusPolicy.from_pretrained(tiny_dir, local_files_only=True, lora=lora)


def test_lora_null_or_rank_null_is_full_fine_tuning(tiny_dir):
    for lora in (None, {"r": None, "alpha": None, "target_modules": None, "dropout": 0.0}):
        policy = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True, lora=lora)
        assert not policy.has_lora
        assert all(p.requires_grad for p in policy.lm_head.parameters())
