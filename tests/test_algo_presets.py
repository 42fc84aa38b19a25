"""The algorithm presets beyond the paper (conf/algo/kl_free, cfg_free, dapo): each composes with
its documented values and runs training steps on the tiny model, showing its mechanism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from workflow_runs import CONF, compose_train, read_metrics

from t2ir1.lit.module import GRPOSettings
from t2ir1.policy.run_card import card_from_checkpoint
from t2ir1.train import build_module, run

# preset -> the values it must set (written out here, not read from the YAML) and its source
EXPECTED = {
    "kl_free": ({"beta": 0.0}, "2503.14476"),
    "cfg_free": ({"cfg_weight": 1.0, "eval_sampling": {"cfg_weight": 5.0}}, "2505.24875"),
    "dapo": (
        {"clip_eps_low": 0.2, "clip_eps_high": 0.28, "num_iterations": 2, "filter_groups": True,
         "loss_aggregation": "token_mean", "beta": 0.0},
        "2503.14476",
    ),
}


def _cfg(tmp_path: Path, tiny_dir: Path, preset: str, *extra: str):
    cfg = compose_train(tmp_path / "run", f"algo={preset}", "logger=csv", "algo.group_size=2",
                        f"paths.cache_dir={tmp_path}/cache", *extra)
    cfg.model.cache_dir = str(tiny_dir.parent)  # the session's tiny checkpoint (no write to ~/.cache)
    return cfg


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_composes_with_its_documented_values_and_source(tmp_path, preset):
    values, arxiv = EXPECTED[preset]
    header = [line for line in (CONF / "algo" / f"{preset}.yaml").read_text().splitlines() if line.startswith("#")]
    assert any("Source:" in line for line in header) and any(arxiv in line for line in header)
    cfg = compose_train(tmp_path, f"algo={preset}")
    for key, value in values.items():
        assert OmegaConf.to_container(cfg.algo, resolve=True)[key] == value, key
    # everything else is the paper's (bicot_grpo), and the settings object accepts it
    assert cfg.algo.group_size == 4 and cfg.algo.adv_eps == 1e-4  # experiment=tiny's G; the paper's eps
    settings = instantiate(cfg.algo)
    assert isinstance(settings, GRPOSettings)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_no_experiment_overrides_a_preset_value(experiment):
    """Experiments come after algo in the defaults list: one setting e.g. algo.beta would silently
    undo algo=kl_free (the demo did, with the paper's 0.01)."""
    from hydra import compose, initialize_config_dir

    for preset, (values, _) in EXPECTED.items():
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[f"algo={preset}", f"experiment={experiment}"])
        algo = OmegaConf.to_container(cfg.algo, resolve=False)
        changed = {key: algo[key] for key, value in values.items() if algo[key] != value}
        assert not changed, f"experiment={experiment} overrides algo={preset}: {changed}"


def test_kl_free_builds_no_reference_and_trains_without_kl(tmp_path, tiny_dir):
    paper = build_module(_cfg(tmp_path / "paper", tiny_dir, "bicot_grpo"))
    paper.configure_model()
    free = build_module(_cfg(tmp_path / "free", tiny_dir, "kl_free"))
    free.configure_model()
    assert paper.reference is not None and free.reference is None

    def weights(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    # no reference memory: the module's weights are the policy's alone; the paper preset's add a
    # frozen copy of the language model
    assert weights(free) == weights(free.policy)
    assert weights(paper) - weights(paper.policy) >= weights(paper.policy.language_model)
    cfg = _cfg(tmp_path, tiny_dir, "kl_free", "trainer.max_steps=1")
    run(cfg)
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    assert metrics[0]["train/kl"] == 0.0 and math.isfinite(metrics[0]["train/loss"])
    assert "timing/ref_logprobs" not in metrics[0] or metrics[0]["timing/ref_logprobs"] < 0.05


def test_cfg_free_trains_at_cfg_1_and_its_card_evaluates_at_5(tmp_path, tiny_dir):
    run(_cfg(tmp_path, tiny_dir, "cfg_free", "trainer.max_steps=1"))
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    # unguided rollouts sample the distribution the loss replays: the on-policy gap is measured
    # (NaN under CFG) and tiny
    assert metrics[0]["rollout/logp_diff"] < 1e-4
    card = card_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert card.training["cfg_weight"] == 1.0 and card.evaluation["cfg_weight"] == 5.0
    # the paper preset, guided, has no measurable gap
    run(_cfg(tmp_path / "guided", tiny_dir, "bicot_grpo", "trainer.max_steps=1"))
    assert math.isnan(read_metrics(tmp_path / "guided" / "run" / "metrics.csv")[0].get("rollout/logp_diff", math.nan))


def test_dapo_filters_reuses_and_clips(tmp_path, tiny_dir):
    """Two optimiser steps = one rollout trained twice: dynamic sampling on the first serving,
    the ratio leaves 1 on the reuse, where the asymmetric clip range applies."""
    run(_cfg(tmp_path, tiny_dir, "dapo", "trainer.max_steps=2"))
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    assert sorted(metrics) == [0, 1]
    first, reuse = metrics[0], metrics[1]
    assert first["train/ratio_mean"] == 1.0 and first["train/clip_frac"] == 0.0
    assert abs(reuse["train/ratio_mean"] - 1.0) > 1e-6 and reuse["train/clip_frac"] > 0.0  # clipping acts
    for step in (first, reuse):
        assert step["filter/groups_kept"] == 2.0 and step["adv/zero_std_frac"] == 0.0
        assert step["train/kl"] == 0.0
    # the reuse trains the rollout the first step sampled (refills included)
    assert reuse["filter/groups_generated"] == first["filter/groups_generated"]
    assert torch.isfinite(torch.tensor(reuse["train/loss"]))
