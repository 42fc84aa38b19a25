"""GIT VQA member on a tiny GIT saved with save_pretrained."""

from __future__ import annotations

import pytest
import torch

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.git import GitVQAReward
from t2ir1.testing.tiny_rewards import build_tiny_git


@pytest.fixture(scope="module")
def git_path(tmp_path_factory):
    return str(build_tiny_git(tmp_path_factory.mktemp("git")))


@pytest.fixture(scope="module")
def reward(git_path):
    member = GitVQAReward(model_path=git_path, dtype="float32", micro_batch_size=16)
    member.setup("cpu")
    return member


def _single_question_score(reward: GitVQAReward, image, phrase: str) -> float:
    """Hand path: one question, no padding, next-token softmax restricted to yes/no."""
    pixel_values = reward.processor.image_processor([image.convert("RGB")], return_tensors="pt").pixel_values
    input_ids = torch.tensor([reward.question_ids(phrase)])
    with torch.no_grad():
        logits = reward.model(input_ids=input_ids, pixel_values=pixel_values).logits[0, -1]
    p_yes, p_no = torch.softmax(logits, dim=-1)[reward.answer_ids].tolist()
    return p_yes / (p_yes + p_no)


def test_frozen_and_question_format(reward):
    assert not reward.model.training
    assert not any(p.requires_grad for p in reward.model.parameters())
    tokenizer = reward.processor.tokenizer
    ids = reward.question_ids("red cat")
    # CLS first, then "red cat ?" with no SEP
    assert ids[0] == tokenizer.cls_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == ["red", "cat", "?"]


def test_scores_match_hand_computation(reward, records, images):
    out = reward(records, images)
    assert out.scores.shape == (5,) and out.scores.dtype == torch.float32
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    # row 0 (color): its attr_nouns "red cat"; row 1 spatial and row 2 numeracy: 0; row 4 no phrases: 1
    assert out.scores[0].item() == pytest.approx(
        _single_question_score(reward, images[0], "red cat"), abs=1e-5
    )
    assert out.scores[1].item() == 0.0 and out.scores[2].item() == 0.0
    assert out.scores[4].item() == 1.0
    # row 3 (object): mean over its two nouns
    expected = (
        _single_question_score(reward, images[3], "dog") + _single_question_score(reward, images[3], "cat")
    ) / 2
    assert out.scores[3].item() == pytest.approx(expected, abs=1e-5)


def test_batching_invariance(reward, records, images):
    # extra rows with many phrases so questions of different lengths are padded together
    extra = PromptRecord(
        prompt="x", task_type="color", nouns=("cat",), attr_nouns=("blue traffic light", "red dog", "cat")
    )
    batch_records, batch_images = [*records, extra], [*images, images[1]]
    batched = reward(batch_records, batch_images).scores
    single = torch.cat([reward([r], [i]).scores for r, i in zip(batch_records, batch_images, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    small_batches = GitVQAReward(model_path=reward.model_path, dtype="float32", micro_batch_size=2)
    small_batches.setup("cpu")
    torch.testing.assert_close(small_batches(batch_records, batch_images).scores, batched, atol=1e-5, rtol=0)


def test_clear_errors(git_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GitVQAReward(model_path=str(tmp_path / "nowhere")).setup()
    with pytest.raises(ValueError, match="answer 'maybe'"):
        GitVQAReward(model_path=git_path, yes_token="maybe").setup()


def test_batched_preprocessing_matches_the_processor(reward):
    """Tensor resize/crop (torch uint8 antialiased bicubic) vs GIT's own image processor, scaled back.

    Measured on these images: at most 1 grey level, mean below 0.01 levels.
    """
    import numpy as np
    from PIL import Image

    assert reward._tensor_preprocessing is not None  # the tiny GIT ships a CLIP processor
    generator = np.random.default_rng(4)
    sizes = [(384, 384), (384, 200), (200, 384), (40, 40), (33, 47), (384, 384)]
    images = [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    batched = reward.preprocess(images)  # [6, 3, 32, 32]
    reference = reward.processor.image_processor(images, return_tensors="pt").pixel_values
    assert batched.shape == reference.shape == (6, 3, 32, 32)
    levels = ((batched - reference) * reward._tensor_preprocessing["std"] * 255).abs()
    assert levels.max() <= 1 + 1e-3
    assert levels.mean() < 0.01


def test_unusual_processor_falls_back_to_it(git_path, images):
    member = GitVQAReward(model_path=git_path, dtype="float32")
    member.setup("cpu")
    processor = member.processor.image_processor
    processor.do_center_crop = False  # no longer the pipeline the tensor path follows
    assert member._clip_settings(processor) is None
    member._tensor_preprocessing = None  # what setup() stores for such a processor
    square = [img.resize((40, 40)) for img in images]  # uncropped outputs must share a size to stack
    torch.testing.assert_close(
        member.preprocess(square), processor(square, return_tensors="pt").pixel_values, atol=0, rtol=0
    )
