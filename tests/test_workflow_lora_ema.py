"""LoRA + EMA through the user's entry points: train.py runs, resumes, export merges, generate uses the EMA."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from t2ir1.export import export_checkpoint
from t2ir1.generate import load_policy
from t2ir1.policy.janus import JanusPolicy
from t2ir1.train import run
from tests.workflow_runs import compose_train


def test_lora_and_ema_train_resume_export_and_generate(tmp_path, monkeypatch):
    monkeypatch.setenv("T2IR1_CACHE", str(tmp_path / "cache"))
    overrides = ("model.lora.r=4", "algo.ema.decay=0.5", "logger=csv", f"paths.cache_dir={tmp_path}/cache")
    run(compose_train(tmp_path / "run", *overrides, "trainer.max_steps=2"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)
    assert first["callbacks"]["EMAWeights"]["n_averaged"] == 3  # initial weights + 2 steps
    assert all("lora_" in name for name in first["callbacks"]["EMAWeights"]["weights"])
    run(compose_train(tmp_path / "run", *overrides, "trainer.max_steps=3", f"ckpt_path={last}"))
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 3 and resumed["callbacks"]["EMAWeights"]["n_averaged"] == 4

    # export merges the adapters: a plain Janus whose weights are base + B A * alpha / r
    cfg = compose_train(tmp_path / "run", *overrides)
    (tmp_path / "run" / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True)}),
                   tmp_path / "run" / ".hydra" / "config.yaml")
    out = export_checkpoint(last, tmp_path / "exported")
    exported = JanusPolicy.from_pretrained(out, local_files_only=True)
    state = resumed["state_dict"]
    prefix = "policy.model.model.language_model.layers.0.self_attn.q_proj."
    a, b = state[prefix + "lora_A.default.weight"], state[prefix + "lora_B.default.weight"]
    assert b.abs().max() > 0  # the adapters trained, so the merge changes the weight
    expected = state[prefix + "base_layer.weight"] + b @ a * (4 / 4)  # alpha null = r: scale 1
    assert not torch.equal(expected, state[prefix + "base_layer.weight"])
    torch.testing.assert_close(exported.language_model.layers[0].self_attn.q_proj.weight, expected, rtol=0, atol=1e-6)

    # generate.py use_ema=true: the adapters hold the EMA, the base the checkpoint's weights
    gen = OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True), "ckpt_path": str(last),
                            "device": "cpu", "use_ema": True})
    policy = load_policy(gen)
    params = dict(policy.named_parameters())
    for name, value in resumed["callbacks"]["EMAWeights"]["weights"].items():
        assert torch.equal(params[name], value)
