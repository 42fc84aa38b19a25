"""Dynamic sampling (algo.filter_groups, DAPO): zero-std groups are dropped and replaced by the
next prompts of the data stream, on the tiny Janus with the real colour reward."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch

from t2ir1.data.datamodule import PromptDataModule
from t2ir1.data.records import PromptRecord
from t2ir1.lit.checkpointing import ResumableData, ResumableDataLoader
from t2ir1.lit.module import BiCoTGRPOModule, GRPOSettings
from t2ir1.rewards.color import ColorAgreementReward
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.rollout.dynamic_sampling import concat_generations, select_groups


def white_fraction_reward() -> RewardEnsemble:
    """The colour reward with white and black only, both achromatic: a prompt naming "white" scores
    the white fraction of each image (differs between samples); a prompt without colour words scores
    colourfulness, which is 0 for every image (a zero-std group)."""
    colour = ColorAgreementReward(
        palette={"white": [255, 255, 255], "black": [0, 0, 0]}, target_fraction=1.0, achromatic=["white", "black"]
    )
    return RewardEnsemble({"color": colour}, {"color": 1.0})


def record(prompt: str, prompt_id: str) -> PromptRecord:
    return PromptRecord(prompt=prompt, task_type="object", nouns=(prompt.split()[-1],), prompt_id=prompt_id)


# q1 names no colour: its group scores 0 everywhere and carries no signal
STREAM = [record("a white cube", "q0"), record("a cube", "q1"), record("a white ball", "q2"), record("a white cone", "q3")]


def make_module(policy, **overrides) -> BiCoTGRPOModule:
    settings = GRPOSettings(
        **{"group_size": 4, "max_new_tokens": 4, "seed": 0, "beta": 0.0, "filter_groups": True, **overrides}
    )
    module = BiCoTGRPOModule(policy, white_fraction_reward(), settings, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    module.configure_model()
    module._setup_reward()
    return module


class Recorder(L.Callback):
    """Per micro-batch: the prompts served, the prompts trained on, and the logged filter counts."""

    def __init__(self):
        self.served, self.trained, self.metrics, self.rollouts = [], [], [], []
        self.served_reward = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        rollout = outputs["record"]
        self.served.append([r.prompt_id for r in batch])
        self.trained.append(list(dict.fromkeys(r.prompt_id for r in rollout.records)))
        self.rollouts.append(rollout)
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("filter/")})
        self.served_reward.append(float(trainer.callback_metrics["reward/served"]) if "reward/served" in trainer.callback_metrics else None)


def fit(module, tmp_path, max_steps, repeats=1, records=STREAM, batch_size=2):
    data = ResumableData(PromptDataModule(lambda: records, batch_size=batch_size, shuffle=False), repeats=repeats)
    recorder = Recorder()
    L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=tmp_path, callbacks=[recorder],
    ).fit(module, datamodule=data)
    return recorder


def test_zero_std_group_is_dropped_and_replaced_from_the_stream(tiny_policy, tmp_path):
    module = make_module(tiny_policy)
    recorder = fit(module, tmp_path, max_steps=1)
    # served [q0, q1]; q1's group is constant -> dropped; the refill draws the stream's next batch
    # [q2, q3]; q2 fills the batch, q3 is surplus (dropped, as verl's batch[:traj_bsz])
    assert recorder.served == [["q0", "q1"]]
    assert recorder.trained == [["q0", "q2"]]
    assert recorder.metrics[0] == {
        "filter/groups_generated": 4.0,
        "filter/groups_informative": 3.0,
        "filter/groups_kept": 2.0,
        "filter/rounds": 2.0,
        "filter/bound_reached": 0.0,
    }
    rollout = recorder.rollouts[0]
    # every trained group's rewards differ; the batch holds B x G rows of the kept prompts
    scores = rollout.rewards.scores.view(2, 4)
    assert (scores.amax(1) > scores.amin(1)).all()
    assert len(rollout.records) == 8 and rollout.image_tokens.shape[0] == 8
    assert rollout.advantages.view(2, 4).abs().sum(1).gt(0).all()
    # the batch as served (q0, q1): the policy's reward, the dropped constant group included
    served = rollout.served_rewards.scores.view(2, 4)
    assert torch.equal(served[0], scores[0]) and served[1].eq(0).all()
    assert recorder.served_reward[0] == pytest.approx(float(served.mean()), abs=1e-6)


def test_without_filtering_the_zero_std_group_is_trained_on(tiny_policy, tmp_path):
    recorder = fit(make_module(tiny_policy, filter_groups=False), tmp_path, max_steps=1)
    assert recorder.trained == [["q0", "q1"]] and recorder.metrics == [{}]
    assert recorder.rollouts[0].advantages.view(2, 4)[1].abs().sum() == 0  # q1: no signal
    assert recorder.rollouts[0].served_rewards is recorder.rollouts[0].rewards and recorder.served_reward == [None]


def test_without_refill_the_batch_trains_on_what_is_kept_and_says_so_once(tiny_policy, tmp_path, caplog):
    """max_gen_rounds=1: no refill by design; the batch [q0, q1] trains on q0 alone; an info line once
    over two steps, no warning (nothing to fix)."""
    module = make_module(tiny_policy, max_gen_rounds=1)
    with caplog.at_level(logging.INFO, logger="t2ir1.lit.module"):
        recorder = fit(module, tmp_path, max_steps=2, records=STREAM[:2] * 2)
    assert recorder.trained == [["q0"], ["q0"]]
    assert recorder.metrics[0]["filter/groups_kept"] == 1.0 and recorder.metrics[0]["filter/bound_reached"] == 1.0
    assert recorder.metrics[0]["filter/rounds"] == 1.0
    lines = [r for r in caplog.records if "algo.filter_groups" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO] and "without refilling" in lines[0].getMessage()


def test_bound_reached_while_refilling_trains_on_what_is_kept_and_warns(tiny_policy, tmp_path, caplog):
    """max_gen_rounds=2: [q0, q1] keeps q0, the refill [q1, q1] keeps nothing; the batch trains on q0
    and a warning says how to get full batches."""
    module = make_module(tiny_policy, max_gen_rounds=2)
    with caplog.at_level(logging.WARNING, logger="t2ir1.lit.module"):
        recorder = fit(module, tmp_path, max_steps=1, records=[STREAM[0], STREAM[1], STREAM[1], STREAM[1]])
    assert recorder.trained == [["q0"]]
    assert recorder.metrics[0]["filter/rounds"] == 2.0 and recorder.metrics[0]["filter/bound_reached"] == 1.0
    lines = [r.getMessage() for r in caplog.records if "algo.filter_groups" in r.getMessage()]
    assert len(lines) == 1 and "Raise algo.max_gen_rounds" in lines[0]


def test_kept_rollout_is_reused_with_num_iterations(tiny_policy, tmp_path):
    """num_iterations=2: the filtered rollout (q0 + refill q2) is trained twice, off-policy on reuse."""
    module = make_module(tiny_policy, num_iterations=2)
    recorder = fit(module, tmp_path, max_steps=2, repeats=2)
    assert recorder.served == [["q0", "q1"], ["q0", "q1"]]
    assert recorder.trained == [["q0", "q2"], ["q0", "q2"]]
    assert recorder.rollouts[1] is recorder.rollouts[0]
    assert module._pending_rollouts == {}


@pytest.mark.parametrize("prompt_quirks", [False, True], ids=["t2ir1-layout", "original-layout"])
def test_joined_generations_give_the_same_logprobs_as_each_part(tiny_policy, prompt_quirks):
    """Rounds are joined with extra padding (prompts on the left, completions on the right): the
    log-probs of every kept row equal those of its own round (positions come from the masks, or
    under ``prompt_quirks`` from the explicit positions, padded alike)."""
    module = make_module(tiny_policy, prompt_quirks=prompt_quirks)
    first = module.rollout(STREAM[:2], step=0)
    second = module.rollout([record("a white ball with a long descriptive name", "q9")], step=0)
    assert first.generation.semantic_prompt_ids.shape[1] != second.generation.semantic_prompt_ids.shape[1]
    joined = concat_generations(
        [select_groups(first.generation, torch.tensor([1])), second.generation], tiny_policy.pad_id
    )
    assert joined.prompts == ["a cube", second.generation.prompts[0]]
    assert (joined.image_prompt_positions is not None) == prompt_quirks
    logp = {}
    for name, generation in (("first", first.generation), ("second", second.generation), ("joined", joined)):
        rollout = type(first)(records=[], generation=generation)
        values, mask = module.sequence_logprobs(rollout, module.policy)
        logp[name] = (values * mask).detach()
    width = logp["joined"].shape[1]
    text_width = joined.completion_ids.shape[1]

    def aligned(values):  # pad the text part on the right to the joined width
        text, image = values[:, : values.shape[1] - tiny_policy.num_image_tokens], values[:, -tiny_policy.num_image_tokens :]
        return torch.cat([torch.nn.functional.pad(text, (0, text_width - text.shape[1])), image], dim=1)

    assert aligned(logp["first"]).shape[1] == width
    torch.testing.assert_close(logp["joined"][:4], aligned(logp["first"])[4:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logp["joined"][4:], aligned(logp["second"]), rtol=1e-4, atol=1e-5)


def test_refills_are_drawn_again_on_resume(tmp_path):
    """The loader's state records where refills were drawn; a loader restored from it skips the
    served batches, draws those refills again, and serves what the uninterrupted one serves."""
    data = [[i] for i in range(8)]

    def loader():
        return ResumableDataLoader(data, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(3))

    full = loader()
    it = iter(full)
    served = [next(it), next(it)]
    refill = full.next_refill()
    served.append(next(it))
    state = full.state_dict()
    rest = list(it)
    assert state["served"] == 3 and state["refills"] == [2]
    resumed = loader()
    resumed.load_state_dict(state)
    assert list(resumed) == rest
    assert refill not in rest and len(served + rest) == 7
    # the epoch ends one batch early; a state taken at its end starts the next epoch
    assert resumed.state_dict()["served"] == 0


def test_negative_max_gen_rounds_is_a_clear_error():
    with pytest.raises(ValueError, match="algo.max_gen_rounds must be >= 0"):
        GRPOSettings(max_gen_rounds=-1)
