"""Every entry point generates through the engine: equal seeds and settings give equal samples,
and the rollout's sampling log-probs agree with the training pass (on-policy check)."""

from __future__ import annotations

import math

import pytest
import torch

from t2ir1.algos.settings import GRPOSettings
from t2ir1.data.records import PromptRecord
from t2ir1.generate import generate_samples
from t2ir1.lit.module import BiCoTGRPOModule
from t2ir1.rewards.base import RewardOutput
from t2ir1.rollout.sampling import prompt_seed

RECORDS = [
    PromptRecord(prompt="a red cube", task_type="object", nouns=("cube",), prompt_id="p0"),
    PromptRecord(prompt="two blue balls left of a tree", task_type="object", nouns=("ball",), prompt_id="p1"),
]


class RowIndexReward:
    """Scores row i with i / N: varied rewards without any model."""

    name = "row"

    def setup(self, device="cpu"):
        pass

    def __call__(self, records, images):
        return RewardOutput(self.name, torch.arange(len(images), dtype=torch.float32) / len(images))


def make_module(policy, **settings) -> BiCoTGRPOModule:
    settings = GRPOSettings(**{"group_size": 3, "max_new_tokens": 8, "seed": 7, **settings})
    module = BiCoTGRPOModule(policy, RowIndexReward(), settings, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    module.configure_model()
    module._setup_reward()
    return module


@pytest.mark.parametrize("cfg_weight", [1.0, 3.0])
def test_training_rollout_and_generate_draw_the_same_samples(tiny_policy, cfg_weight):
    module = make_module(tiny_policy, cfg_weight=cfg_weight, text_top_k=20, image_top_p=0.9)
    rollout = module.rollout(RECORDS, step=4)
    samples = generate_samples(
        tiny_policy,
        [r.prompt for r in RECORDS],
        n_per_prompt=3,
        cfg_weight=cfg_weight,
        max_new_tokens=8,
        reasoning_template=module.reasoning_template,
        batch_size=1,  # another batching than the rollout's: per-prompt generators make it irrelevant
        seeds=[prompt_seed(7, 4, r.prompt_id) for r in RECORDS],
        text_top_k=20,
        image_top_p=0.9,
    )
    assert [s.cot for s in samples] == rollout.cots
    assert torch.equal(torch.stack([s.image_tokens for s in samples]), rollout.image_tokens)
    # another step draws other samples
    assert not torch.equal(module.rollout(RECORDS, step=5).image_tokens, rollout.image_tokens)


def test_rollout_log_probs_match_the_training_pass_at_cfg_one(tiny_policy):
    module = make_module(tiny_policy, cfg_weight=1.0)
    _, diagnostics = module.update(module.step_record(module.rollout(RECORDS, step=0)))
    # same weights, same distribution: the replay equals the sampler up to float32 rounding
    assert diagnostics["rollout/logp_diff"].item() < 1e-4
    assert diagnostics["rollout/text_logp_diff"].item() < 1e-4


def test_log_prob_gap_is_nan_under_guidance_and_shows_a_filtered_cot_sampler(tiny_policy):
    module = make_module(tiny_policy, cfg_weight=5.0, text_top_k=3)
    _, diagnostics = module.update(module.step_record(module.rollout(RECORDS, step=0)))
    assert math.isnan(diagnostics["rollout/logp_diff"].item())
    # top-k 3 renormalises over 3 tokens: the untruncated replay gives each token less mass
    # (the original's slightly off-policy CoT, REFERENCE §2.1)
    assert diagnostics["rollout/text_logp_diff"].item() > 1e-3
