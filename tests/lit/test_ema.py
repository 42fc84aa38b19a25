"""EMA of the trained weights (``algo.ema.decay``): hand-computed values, one update per
optimiser step, fp32, checkpoint round trip, and sampling from the average (``use_ema``)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn

from t2ir1.data.records import PromptRecord
from t2ir1.generate import load_policy
from t2ir1.lit.ema import EMAWeights, swapped_weights
from t2ir1.lit.module import BiCoTGRPOModule, GRPOSettings
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.testing.tiny_rewards import BrightnessReward

RECORDS = [
    PromptRecord(prompt="a red cube", task_type="object", nouns=("cube",), prompt_id="p0"),
    PromptRecord(prompt="two blue balls", task_type="object", nouns=("ball",), prompt_id="p1"),
]




class Records(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return RECORDS[i % 2]


class ParamRecorder(L.Callback):
    """The trained parameters after every optimiser step (and before the first)."""

    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def _take(self, pl_module):
        self.snapshots.append({n: p.detach().clone() for n, p in pl_module.policy.named_parameters() if p.requires_grad})

    def on_fit_start(self, trainer, pl_module):
        self._take(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if len(self.snapshots) <= trainer.global_step:
            self._take(pl_module)


def make_module(tiny_dir) -> BiCoTGRPOModule:
    from t2ir1.policy.janus import JanusPolicy

    policy = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True)
    settings = GRPOSettings(group_size=2, max_new_tokens=4, seed=0, beta=0.0)
    reward = RewardEnsemble({"brightness": BrightnessReward()}, {"brightness": 1.0})
    return BiCoTGRPOModule(policy, reward, settings, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))


def fit(module, tmp_path, max_steps, callbacks, ckpt_path=None, accumulate=1):
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=callbacks, accumulate_grad_batches=accumulate,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    loader = torch.utils.data.DataLoader(Records(), batch_size=1, collate_fn=list)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def test_ema_of_a_scalar_follows_the_hand_computed_recursion():
    # decay 0.5, theta_0 = 0 and the weights 1, 2, 4 after three steps:
    # ema_1 = 0.5 * 0 + 0.5 * 1 = 0.5; ema_2 = 0.25 + 1 = 1.25; ema_3 = 0.625 + 2 = 2.625
    holder = nn.Module()
    holder.w = nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))
    ema = EMAWeights(decay=0.5)
    ema.attach(holder)
    assert ema.weights["w"].dtype == torch.float32  # kept in fp32 whatever the parameter's dtype
    expected = []
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            holder.w.fill_(value)
        ema.update()
        expected.append(float(ema.weights["w"]))
    assert expected == [0.5, 1.25, 2.625]


def test_ema_equals_its_hand_computed_value_after_three_optimizer_steps(tiny_dir, tmp_path):
    module, ema, recorder = make_module(tiny_dir), EMAWeights(decay=0.5), ParamRecorder()
    # two micro-batches per optimiser step: the EMA moves once per step, not per micro-batch
    fit(module, tmp_path, max_steps=3, callbacks=[ema, recorder], accumulate=2)
    assert len(recorder.snapshots) == 4 and int(ema.averaged.n_averaged) == 4
    for name, value in ema.weights.items():
        thetas = [s[name].float() for s in recorder.snapshots]
        expected = thetas[0]
        for theta in thetas[1:]:
            expected = 0.5 * expected + 0.5 * theta
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    # the average is not the last weights (the test could fail)
    name = next(iter(ema.weights))
    assert not torch.allclose(ema.weights[name], recorder.snapshots[-1][name])


def test_resume_restores_the_ema_and_continues_it_exactly(tiny_dir, tmp_path):
    straight = EMAWeights(decay=0.8)
    fit(make_module(tiny_dir), tmp_path / "a", max_steps=3, callbacks=[straight])

    ckpt_dir = tmp_path / "b"
    first = EMAWeights(decay=0.8)
    fit(make_module(tiny_dir), ckpt_dir, max_steps=2,
        callbacks=[first, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)])
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=True)["callbacks"]["EMAWeights"]
    assert saved["n_averaged"] == 3
    for name, value in first.weights.items():
        assert torch.equal(saved["weights"][name], value)

    resumed = EMAWeights(decay=0.8)
    fit(make_module(tiny_dir), ckpt_dir, max_steps=3, callbacks=[resumed], ckpt_path=ckpt_dir / "last.ckpt")
    assert int(resumed.averaged.n_averaged) == 4
    for name, value in straight.weights.items():
        torch.testing.assert_close(resumed.weights[name], value, rtol=0, atol=1e-6)


def test_use_ema_generates_from_the_ema_weights(tiny_dir, tmp_path):
    ema = EMAWeights(decay=0.5)
    module = make_module(tiny_dir)
    fit(module, tmp_path, max_steps=2, callbacks=[ema, ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "_partial_": True,
            "name_or_path": str(tiny_dir), "dtype": "float32", "local_files_only": True}
    cfg = OmegaConf.create({"model": node, "ckpt_path": str(tmp_path / "last.ckpt"), "device": "cpu", "use_ema": True})
    from_ema = load_policy(cfg)
    raw = load_policy(OmegaConf.merge(cfg, {"use_ema": False}))
    params, raw_params = dict(from_ema.named_parameters()), dict(raw.named_parameters())
    for name, value in ema.weights.items():
        assert torch.equal(params[name], value)
        assert not torch.equal(raw_params[name], value)
    # sampling from use_ema=true equals sampling from the raw policy with the EMA swapped in
    from t2ir1.rollout.engine import GenerationEngine

    kwargs = {"group_size": 2, "use_cot": True, "reasoning_template": module.reasoning_template,
              "system_prompt": module.settings.system_prompt}
    prompts, seeds = [r.prompt for r in RECORDS], [3, 4]
    sampled = GenerationEngine(from_ema, module.sampling).generate(prompts, seeds, **kwargs)
    with swapped_weights(raw, ema.weights):
        swapped = GenerationEngine(raw, module.sampling).generate(prompts, seeds, **kwargs)
    assert torch.equal(sampled.image_tokens, swapped.image_tokens) and sampled.cots == swapped.cots
    assert torch.equal(raw_params[name], dict(raw.named_parameters())[name])  # swapped back out


def test_bad_decay_and_use_ema_without_an_ema_are_clear_errors(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match=r"algo.ema.decay=1.0: must be in \(0, 1\)"):
        EMAWeights(decay=1.0)
    fit(make_module(tiny_dir), tmp_path, max_steps=1, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "_partial_": True,
            "name_or_path": str(tiny_dir), "local_files_only": True}
    cfg = OmegaConf.create({"model": node, "ckpt_path": str(tmp_path / "last.ckpt"), "device": "cpu", "use_ema": True})
    with pytest.raises(ValueError, match="holds no EMA weights"):
        load_policy(cfg)
    with pytest.raises(ValueError, match="use_ema=true needs ckpt_path"):
        load_policy(OmegaConf.merge(cfg, {"ckpt_path": None}))


def test_heldout_callback_evaluates_inside_the_ema_weights(tiny_dir, tmp_path):
    from t2ir1.shapeworld.callbacks import HeldoutAccuracyCallback

    ema, module = EMAWeights(decay=0.5), make_module(tiny_dir)
    fit(module, tmp_path, max_steps=2, callbacks=[ema])
    raw = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    with HeldoutAccuracyCallback(num_prompts=1, use_ema=True)._weights(module):
        params = dict(module.policy.named_parameters())
        for name, value in ema.weights.items():
            assert torch.equal(params[name], value)
            assert not torch.equal(raw[name], value)
    for name, param in module.policy.named_parameters():  # the raw weights are back
        assert torch.equal(param, raw[name])
    without = make_module(tiny_dir)
    fit(without, tmp_path / "plain", max_steps=1, callbacks=[])
    with pytest.raises(ValueError, match="keeps no EMA"):
        HeldoutAccuracyCallback(num_prompts=1, use_ema=True)._weights(without)
