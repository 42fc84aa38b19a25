"""Every conf/reward config composes and instantiates; the paper ensemble runs on tiny members."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from t2ir1.rewards.color import ColorAgreementReward
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.rewards.gdino import GroundingDinoReward
from t2ir1.rewards.git import GitVQAReward
from t2ir1.rewards.hps import HPSReward
from t2ir1.rewards.orm import OutcomeRewardModel
from t2ir1.testing.tiny_rewards import (
    build_tiny_gdino,
    build_tiny_git,
    build_tiny_hps,
    build_tiny_llava_next_checkpoint,
)

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
MEMBER_TYPES = {
    "color": ColorAgreementReward,
    "hps": HPSReward,
    "git": GitVQAReward,
    "gdino": GroundingDinoReward,
    "orm": OutcomeRewardModel,
}


def _compose(name: str, overrides: list[str] = ()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=None, overrides=[f"+reward={name}", *overrides])


@pytest.mark.parametrize("name", sorted(MEMBER_TYPES))
def test_single_member_configs(name):
    cfg = _compose(name, [f"reward.weights.{name}=0.5"])
    reward = instantiate(cfg.reward)  # loads nothing: weights come in setup()
    assert isinstance(reward, RewardEnsemble)
    assert list(reward.members) == [name]
    assert isinstance(reward.members[name], MEMBER_TYPES[name])
    assert reward.members[name].name == name
    assert reward.weights == {name: 0.5}


def test_paper_ensemble_config():
    cfg = _compose("ensemble")
    assert dict(cfg.reward.weights) == {"hps": 1.0, "git": 1.0, "gdino": 1.0, "orm": 1.0}
    assert cfg.reward.members.gdino.box_threshold == 0.3
    assert cfg.reward.members.gdino.reference_quirks is False
    reward = instantiate(cfg.reward)
    assert {k: type(v) for k, v in reward.members.items()} == {
        k: MEMBER_TYPES[k] for k in ("hps", "git", "gdino", "orm")
    }


def test_weight_without_member_is_rejected():
    cfg = _compose("color", ["+reward.weights.hps=1.0"])
    with pytest.raises(Exception, match="weights without a member: \\['hps'\\]"):
        instantiate(cfg.reward)


def test_paper_ensemble_runs_on_tiny_members(tmp_path, records, images):
    hps = build_tiny_hps(tmp_path / "hps")
    from t2ir1.rewards.convert_orm import convert

    orm_path = convert(build_tiny_llava_next_checkpoint(tmp_path), tmp_path / "orm", vision_num_heads=2)
    cfg = _compose(
        "ensemble",
        [
            f"reward.members.hps.checkpoint={hps['checkpoint']}",
            f"reward.members.hps.arch={hps['arch']}",
            f"reward.members.hps.model_config_path={hps['model_config_path']}",
            f"reward.members.git.model_path={build_tiny_git(tmp_path)}",
            f"reward.members.gdino.model_path={build_tiny_gdino(tmp_path)}",
            f"reward.members.orm.model_path={orm_path}",
            "reward.weights.hps=0.5",
        ],
    )
    reward = instantiate(cfg.reward)
    reward.setup("cpu")
    out = reward(records, images)
    raw = out.extras["raw"]
    assert set(raw) == {"hps", "git", "gdino", "orm"}
    expected = 0.5 * raw["hps"] + raw["git"] + raw["gdino"] + raw["orm"]
    torch.testing.assert_close(out.scores, expected)
    assert out.scores.shape == (5,) and torch.isfinite(out.scores).all()
