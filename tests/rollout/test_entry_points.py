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


def test_tempered_log_probs_replay_a_sampler_below_temperature_one(tiny_policy):
    """At temperatures 0.7 / 0.8 the original's replay scores the model's own distribution (a gap);
    algo.tempered_logprobs scores the sampled tokens at the sampling temperatures, policy and reference alike."""
    gaps = {}
    for tempered in (False, True):
        module = make_module(tiny_policy, cfg_weight=1.0, text_temperature=0.7, image_temperature=0.8, tempered_logprobs=tempered)
        record = module.step_record(module.rollout(RECORDS, step=0))
        _, diagnostics = module.update(record)
        gaps[tempered] = (diagnostics["rollout/text_logp_diff"].item(), diagnostics["rollout/logp_diff"].item())
        if tempered:  # the reference scores at the same temperatures: same weights, zero KL
            assert torch.allclose(module.sequence_logprobs(record, module.reference)[0], record.ref_logp, atol=1e-6)
            ref, _ = module.reference.sequence_logprobs(record.generation, module.settings.levels, 1)
            assert (ref - record.ref_logp).abs().max() > 1e-3  # at temperature 1 it would differ
    assert max(gaps[True]) < 1e-4
    assert min(gaps[False]) > 1e-3


def test_tempered_log_probs_refuse_a_greedy_sampler():
    with pytest.raises(ValueError, match="tempered_logprobs=true"):
        GRPOSettings(text_temperature=0.0, tempered_logprobs=True)


def test_the_original_image_prompt_layout_is_replayed_in_training_at_cfg_one(tiny_policy):
    """prompt_quirks: the rollout samples on right-padded prompts with positions 0 .. P-1 (a gap before
    <begin_of_image> on shorter rows) and the training pass replays exactly those inputs."""
    from t2ir1.policy.logprobs import image_logprobs

    module = make_module(tiny_policy, cfg_weight=1.0, prompt_quirks=True, reference_reads_policy_embeddings=True)
    assert module.reference.reads_policy_embeddings
    rollout = module.rollout(RECORDS, step=0)
    g = rollout.generation
    width = g.image_prompt_ids.shape[1]
    assert g.image_prompt_positions.tolist() == [list(range(width))] * g.num_rows
    padded = g.image_prompt_mask[:, -2] == 0  # rows with pads right before <begin_of_image>: the gap
    assert padded.any() and (g.image_prompt_mask[:, 0] == 1).all()
    _, diagnostics = module.update(module.step_record(rollout))
    assert diagnostics["rollout/logp_diff"].item() < 1e-4
    assert diagnostics["rollout/text_logp_diff"].item() < 1e-4
    # the positions matter: replayed with positions from the mask, the padded rows no longer match
    args = (tiny_policy.language_model, tiny_policy.generation_head, tiny_policy.embed_image_tokens)
    with torch.no_grad():
        replay = image_logprobs(*args, g.image_prompt_ids, g.image_prompt_mask, g.image_tokens)
    assert (replay - g.image_logp)[padded].abs().mean() > 1e-3
