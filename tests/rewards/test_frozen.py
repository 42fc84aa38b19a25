"""The frozen-model base (t2ir1.rewards.frozen): one skeleton for reward members and judges."""

from __future__ import annotations

import pytest
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.evaluate.judges import BlipVqaJudge, ClipJudge, Mask2FormerDetector
from t2ir1.rewards.frozen import FrozenModel
from t2ir1.rewards.gdino import GroundingDinoReward
from t2ir1.rewards.git import GitVQAReward
from t2ir1.rewards.hps import HPSReward
from t2ir1.rewards.orm import OutcomeRewardModel
from t2ir1.testing.tiny_rewards import build_tiny_git


def test_every_transformers_judge_shares_the_base():
    for cls in (GitVQAReward, GroundingDinoReward, HPSReward, OutcomeRewardModel, ClipJudge, BlipVqaJudge, Mask2FormerDetector):
        assert issubclass(cls, FrozenModel), cls.__name__


def test_setup_loads_once_frozen_and_use_before_setup_is_a_clear_error(tmp_path):
    member = GitVQAReward(model_path=str(build_tiny_git(tmp_path)), dtype="float32", micro_batch_size=2)
    records = [PromptRecord(prompt="a red cat", task_type="color", nouns=("cat",), attr_nouns=("red cat",))] * 5
    images = [Image.new("RGB", (32, 32), (200, 10, 10))] * 5
    with pytest.raises(RuntimeError, match=r"git: call setup\(device\) before scoring"):
        member(records, images)
    member.setup("cpu")
    model = member.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    member.setup("cpu")  # idempotent: the ensemble, the harness and a resumed run may all call it
    assert member.model is model
    # micro-batches of 2 cover 5 items in order, and scoring in them equals scoring at once
    assert [(c.start, c.stop) for c in member.chunks(5)] == [(0, 2), (2, 4), (4, 5)]
    chunked = member(records, images).scores
    member.micro_batch_size = 8
    assert member(records, images).scores.allclose(chunked, atol=1e-5)


def test_micro_batch_size_below_one_is_refused_at_construction():
    with pytest.raises(ValueError, match="clip: micro_batch_size must be >= 1, got 0"):
        ClipJudge("nowhere", micro_batch_size=0)
