"""Overlapped scoring equals one whole-batch call; rows must be covered exactly once."""

from __future__ import annotations

import threading

import pytest
import torch

from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.overlap import OverlappedScorer, merge_outputs


class MeanPixel:
    """Scores an image by its mean pixel / 255 and records the scoring thread."""

    name = "mean_pixel"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def setup(self, device="cpu") -> None:
        pass

    def __call__(self, records, images) -> RewardOutput:
        self.threads.append(threading.current_thread().name)
        scores = torch.tensor([float(torch.tensor(list(im.getdata())).float().mean()) / 255 for im in images])
        lengths = torch.tensor([len(r.prompt) for r in records], dtype=torch.float32)
        return RewardOutput(self.name, scores, {"raw": {"mean_pixel": scores}, "prompt_len": lengths, "tag": "x"})


def test_chunks_equal_whole_batch(records, images):
    reward = MeanPixel()
    whole = reward(records, images)
    scorer = OverlappedScorer(reward, records)
    # Chunks arrive out of order: the merged output is still in row order.
    scorer.on_images(2, images[2:5])
    scorer.on_images(0, images[0:2])
    merged = scorer.collect()
    assert torch.equal(merged.scores, whole.scores)
    assert torch.equal(merged.extras["raw"]["mean_pixel"], whole.scores)
    assert merged.extras["prompt_len"].tolist() == [float(len(r.prompt)) for r in records]
    assert merged.extras["tag"] == ["x", "x"]
    assert all(name.startswith("t2ir1-reward") for name in reward.threads[1:])


@pytest.mark.parametrize(
    ("chunks", "message"),
    [([(0, 2), (1, 5)], "overlap at row 1"), ([(0, 2), (3, 5)], "gap at row 2"), ([(0, 2)], "cover rows \\[0, 2\\)")],
)
def test_bad_coverage_is_an_error(records, images, chunks, message):
    scorer = OverlappedScorer(MeanPixel(), records)
    for start, stop in chunks:
        scorer.on_images(start, images[start:stop])
    with pytest.raises(ValueError, match=message):
        scorer.collect()


def test_chunk_outside_batch(records, images):
    scorer = OverlappedScorer(MeanPixel(), records)
    with pytest.raises(ValueError, match="outside the batch of 5"):
        scorer.on_images(4, images[:3])
    scorer.close()


def test_member_error_surfaces_on_collect(records, images):
    class Broken(MeanPixel):
        def __call__(self, records, images):
            raise RuntimeError("judge exploded")

    scorer = OverlappedScorer(Broken(), records)
    scorer.on_images(0, images)
    with pytest.raises(RuntimeError, match="judge exploded"):
        scorer.collect()


def test_merge_outputs_rejects_mixed_names():
    a = RewardOutput("a", torch.zeros(1))
    b = RewardOutput("b", torch.zeros(1))
    with pytest.raises(ValueError, match="different rewards"):
        merge_outputs([a, b])


def test_ensemble_chunks_keep_raw_and_weighted_per_member(records, images):
    from t2ir1.rewards.ensemble import RewardEnsemble

    ensemble = RewardEnsemble({"mean": MeanPixel(), "other": MeanPixel()}, {"mean": 0.25, "other": 2.0})
    whole = ensemble(records, images)
    scorer = OverlappedScorer(ensemble, records)
    for start in range(0, 5, 2):  # chunks [0,2) [2,4) [4,5)
        scorer.on_images(start, images[start : start + 2])
    merged = scorer.collect()
    assert torch.equal(merged.scores, whole.scores)
    for key in ("raw", "weighted", "dropped"):
        for member in ("mean", "other"):
            assert torch.equal(merged.extras[key][member], whole.extras[key][member])
    # Hand-worked: total = 0.25 * m + 2.0 * m = 2.25 * m.
    assert torch.allclose(merged.scores, 2.25 * whole.extras["raw"]["mean"])


def test_engine_chunks_scored_while_generating_equal_sequential_scoring(tiny_policy):
    """The engine's real on_images chunks, scored on the worker thread, give the sequential scores."""
    from t2ir1.data.records import PromptRecord
    from t2ir1.rewards.color import ColorAgreementReward
    from t2ir1.rewards.ensemble import RewardEnsemble
    from t2ir1.rewards.overlap import scorer_for
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions

    records = [
        PromptRecord(prompt="a red square", task_type="color", nouns=("square",)),
        PromptRecord(prompt="a blue circle", task_type="color", nouns=("circle",)),
        PromptRecord(prompt="a green triangle", task_type="color", nouns=("triangle",)),
    ]
    group = 2
    row_records = [r for r in records for _ in range(group)]
    reward = RewardEnsemble({"color": ColorAgreementReward()}, {"color": 1.0}, **{"async": True})
    reward.setup("cpu")
    scorer = scorer_for(reward, row_records)
    chunks = []

    def on_images(start, images):
        chunks.append((start, len(images)))
        scorer.on_images(start, images)

    engine = GenerationEngine(tiny_policy, SamplingOptions(max_new_tokens=4, chunk_rows=2, cfg_weight=1.0))
    generation = engine.generate(
        [r.prompt for r in records], [11, 12, 13], group_size=group, use_cot=False, on_images=on_images
    )
    overlapped = scorer.collect()
    assert chunks == [(0, 2), (2, 2), (4, 2)]  # three chunks of two rows, reported in order
    sequential = reward(row_records, generation.images)
    assert torch.equal(overlapped.scores, sequential.scores)
    assert torch.equal(overlapped.extras["raw"]["color"], sequential.extras["raw"]["color"])
