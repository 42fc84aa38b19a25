"""RewardEnsemble: weighted sum, key validation, NaN policies, config instantiation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import Reward, RewardOutput
from t2ir1.rewards.ensemble import RewardEnsemble

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class FixedReward:
    """A member returning fixed scores, counting its setup calls (a real, trivial reward)."""

    def __init__(self, name: str, scores: list[float]) -> None:
        self.name = name
        self.scores = torch.tensor(scores)
        self.setup_calls = 0

    def setup(self, device="cpu") -> None:
        self.setup_calls += 1

    def __call__(self, records, images) -> RewardOutput:
        return RewardOutput(self.name, self.scores[: len(records)].clone())


RECORDS = [PromptRecord(prompt=f"prompt {i}", task_type="object") for i in range(3)]
IMAGES = [Image.new("RGB", (8, 8))] * 3


def test_weighted_sum_and_extras():
    a, b = FixedReward("a", [0.5, 1.0, 0.0]), FixedReward("b", [0.2, 0.4, 1.0])
    ensemble = RewardEnsemble({"a": a, "b": b}, {"a": 1.0, "b": 0.5})
    assert isinstance(ensemble, Reward)
    ensemble.setup("cpu")
    ensemble.setup("cpu")
    assert a.setup_calls == b.setup_calls == 1
    out = ensemble(RECORDS, IMAGES)
    # 0.5 + 0.1, 1.0 + 0.2, 0.0 + 0.5
    assert out.name == "ensemble"
    assert out.scores.tolist() == pytest.approx([0.6, 1.2, 0.5])
    assert out.extras["raw"]["b"].tolist() == pytest.approx([0.2, 0.4, 1.0])
    assert out.extras["weighted"]["b"].tolist() == pytest.approx([0.1, 0.2, 0.5])


def test_key_mismatch_names_keys():
    members = {"hps": FixedReward("hps", [0.0]), "git": FixedReward("git", [0.0])}
    with pytest.raises(ValueError, match=r"without a weight: \['git'\]; weights without a member: \['orm'\]"):
        RewardEnsemble(members, {"hps": 1.0, "orm": 1.0})
    with pytest.raises(ValueError, match="finite number"):
        RewardEnsemble(members, {"hps": 1.0, "git": float("nan")})
    with pytest.raises(ValueError, match="nan_policy"):
        RewardEnsemble(members, {"hps": 1.0, "git": 1.0}, nan_policy="ignore")


def test_nan_policy_error_names_prompt_and_member():
    ensemble = RewardEnsemble(
        {"a": FixedReward("a", [0.5, float("nan"), 0.0]), "b": FixedReward("b", [0.1, 0.1, 0.1])},
        {"a": 1.0, "b": 1.0},
    )
    with pytest.raises(ValueError, match=r"member 'a' returned non-finite scores \[nan\] for prompt\(s\) \['prompt 1'\]"):
        ensemble(RECORDS, IMAGES)


def test_nan_policy_error_treats_infinite_scores_as_unscorable():
    ensemble = RewardEnsemble(
        {"a": FixedReward("a", [0.5, 0.5, 0.0]), "b": FixedReward("b", [0.1, float("inf"), 0.1])},
        {"a": 1.0, "b": 1.0},
    )
    with pytest.raises(ValueError, match=r"member 'b' returned non-finite scores \[inf\] for prompt\(s\) \['prompt 1'\]"):
        ensemble(RECORDS, IMAGES)


def test_nan_policy_drop_marks_unscorable_samples_invalid():
    ensemble = RewardEnsemble(
        {
            "a": FixedReward("a", [0.5, float("nan"), float("nan")]),
            "b": FixedReward("b", [0.1, float("-inf"), float("nan")]),
        },
        {"a": 1.0, "b": 2.0},
        nan_policy="drop",
    )
    out = ensemble(RECORDS, IMAGES)
    # row 0: 0.5 + 2 * 0.1 = 0.7, scored; rows 1 (a NaN, b -inf) and 2 (both NaN): unscorable,
    # NaN and invalid (a partial sum would not be comparable with its group's full sums)
    assert out.valid.tolist() == [True, False, False]
    assert out.scores[0].item() == pytest.approx(0.7)
    assert torch.isnan(out.scores[1:]).all()
    assert out.extras["dropped"]["a"].tolist() == [False, True, True]
    assert out.extras["dropped"]["b"].tolist() == [False, True, True]


def test_nan_policy_drop_with_one_missing_term_invalidates_only_that_sample():
    ensemble = RewardEnsemble(
        {"a": FixedReward("a", [0.5, float("nan"), 0.25]), "b": FixedReward("b", [0.1, 0.1, 0.1])},
        {"a": 1.0, "b": 1.0},
        nan_policy="drop",
    )
    out = ensemble(RECORDS, IMAGES)
    assert out.valid.tolist() == [True, False, True]
    assert out.scores[[0, 2]].tolist() == pytest.approx([0.6, 0.35])


def test_color_config_instantiates_and_weights_override():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=None, overrides=["+reward=color", "reward.weights.color=0.5"])
    reward = instantiate(cfg.reward)
    reward.setup("cpu")
    records = [PromptRecord(prompt="a red square", task_type="color")]
    out = reward(records, [Image.new("RGB", (16, 16), (255, 0, 0))])
    # all pixels red -> member score 1, weight 0.5
    assert out.scores.tolist() == pytest.approx([0.5])
    assert out.extras["raw"]["color"].tolist() == pytest.approx([1.0])


def test_member_verdicts_reach_the_ensemble_output_under_the_member_key():
    class Judging(FixedReward):
        def __call__(self, records, images):
            out = super().__call__(records, images)
            return RewardOutput(self.name, out.scores, verdicts={"correct": out.scores > 0.5})

    ensemble = RewardEnsemble(
        {"judge": Judging("judge", [0.9, 0.1]), "plain": FixedReward("plain", [1.0, 1.0])}, {"judge": 1.0, "plain": 1.0}
    )
    records = [PromptRecord(prompt="a", task_type="object"), PromptRecord(prompt="b", task_type="object")]
    out = ensemble(records, [Image.new("RGB", (4, 4))] * 2)
    assert set(out.verdicts) == {"judge/correct"}  # a member without verdicts adds none
    assert out.verdicts["judge/correct"].tolist() == [True, False]
