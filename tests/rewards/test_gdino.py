"""GroundingDINO member on a tiny detector saved with save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2ir1.data.records import PromptRecord, SpatialInfo
from t2ir1.rewards.compositional import compositional_score
from t2ir1.rewards.gdino import GroundingDinoReward, detection_label, noun_spans, positive_map
from t2ir1.testing.tiny_rewards import build_tiny_gdino


@pytest.fixture(scope="module")
def gdino_path(tmp_path_factory):
    return str(build_tiny_gdino(tmp_path_factory.mktemp("gdino")))


@pytest.fixture(scope="module")
def reward(gdino_path):
    member = GroundingDinoReward(model_path=gdino_path, dtype="float32")
    member.setup("cpu")
    return member


def test_noun_spans_and_positive_map():
    caption, spans = noun_spans(["cat", "big red traffic light"])
    assert caption == "cat . big red traffic light."
    # every word: "big" 6..9, "red" 10..13, "traffic" 14..21, "light" 22..27
    assert spans == [[(0, 3)], [(6, 9), (10, 13), (14, 21), (22, 27)]]
    # the original: first and last word only
    quirk_caption, quirk_spans = noun_spans(["cat", "big red traffic light"], first_and_last_word=True)
    assert quirk_caption == caption and quirk_spans == [[(0, 3)], [(6, 9), (22, 27)]]
    # tokens: [CLS] cat . big red traffic light . [SEP]
    offsets = torch.tensor([[0, 0], [0, 3], [4, 5], [6, 9], [10, 13], [14, 21], [22, 27], [27, 28], [0, 0]])
    expected = torch.zeros(2, 9)
    expected[0, 1] = 1.0
    expected[1, 3:7] = 0.25
    torch.testing.assert_close(positive_map(spans, offsets, length=9), expected)
    expected[1, 3:7] = 0.0
    expected[1, 3] = expected[1, 6] = 0.5  # "red" and "traffic" are not part of the original's span set
    torch.testing.assert_close(positive_map(quirk_spans, offsets, length=9), expected)
    # labels: the original joins the first and last word, so a 3+ word noun never matches itself
    assert detection_label("big red traffic light") == "big red traffic light"
    assert detection_label("big red traffic light", first_and_last_word=True) == "big light"
    assert detection_label("traffic light", first_and_last_word=True) == "traffic light"


def test_phrase_logits_are_mean_token_probabilities(reward):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    detections = reward.detect([["cat", "traffic light"]], [image])[0]
    # recompute by hand from the raw model outputs
    tokenizer = reward.processor.tokenizer
    enc = tokenizer("cat . traffic light.", return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids[0])
    assert tokens == ["[CLS]", "cat", ".", "traffic", "light", ".", "[SEP]"]
    pixels = reward.processor.image_processor([image], return_tensors="pt")
    with torch.no_grad():
        out = reward.model(pixel_values=pixels.pixel_values, pixel_mask=pixels.pixel_mask, **enc)
    probs = out.logits[0, :, :7].sigmoid()  # [Q, 7]
    cat_logit = probs[:, 1]
    light_logit = (probs[:, 3] + probs[:, 4]) / 2
    expected = {("cat", q) for q in (cat_logit > 0.3).nonzero().flatten().tolist()}
    expected |= {("traffic light", q) for q in (light_logit > 0.3).nonzero().flatten().tolist()}
    assert len(detections) == len(expected) > 0
    for detection in detections:
        reference = cat_logit if detection.label == "cat" else light_logit
        assert any(
            abs(detection.score - reference[q].item()) < 1e-5 for lab, q in expected if lab == detection.label
        )
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 <= x1 <= 64 + 1e-3 and 0 <= y0 <= y1 <= 64 + 1e-3


def test_scores_ranges_and_batching_invariance(reward, records, images):
    out = reward(records, images)
    assert out.scores.shape == (5,) and out.scores.dtype == torch.float32
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    assert out.scores[4].item() == 1.0  # no nouns
    single = torch.cat([reward([r], [i]).scores for r, i in zip(records, images, strict=True)])
    torch.testing.assert_close(out.scores, single, atol=1e-5, rtol=0)
    # same-size images share one forward pass: still equal to one at a time
    same_size = [img.resize((64, 64)) for img in images]
    batched = reward(records, same_size).scores
    single = torch.cat([reward([r], [i]).scores for r, i in zip(records, same_size, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    # the score is the rules applied to the detections
    for record, image, score in zip(records[:4], same_size[:4], batched[:4], strict=True):
        found = reward.detect([record.nouns], [image])[0]
        assert score.item() == pytest.approx(
            compositional_score(record, found, image_size=image.size), abs=1e-6
        )


def test_reference_quirks_switch(gdino_path):
    record = PromptRecord(
        prompt="a cat above a dog",
        task_type="spatial",
        nouns=("cat", "dog"),
        spatial_info=SpatialInfo("cat", "dog", "above"),
    )
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    quirky = GroundingDinoReward(
        model_path=gdino_path, dtype="float32", box_threshold=0.0, reference_quirks=True
    )
    quirky.setup("cpu")
    # with threshold 0 every noun is detected; "above" has no branch in the original -> 0.2 + 0.2 + 0
    assert quirky([record], [image]).scores.item() == pytest.approx(0.4)
    near = PromptRecord(
        prompt="a cat near a dog",
        task_type="spatial",
        nouns=("cat", "dog"),
        spatial_info=SpatialInfo("cat", "dog", "near"),
    )
    # normalised boxes against a 150 px threshold -> position 1 -> 0.9
    assert quirky([near], [image]).scores.item() == pytest.approx(0.9)


def test_three_word_noun_quirk(gdino_path):
    """With box threshold 0 every noun is detected; the original never matches a 3-word noun."""
    record = PromptRecord(prompt="a cat and a red traffic light", task_type="object", nouns=("cat", "red traffic light"))
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    fixed = GroundingDinoReward(model_path=gdino_path, dtype="float32", box_threshold=0.0)
    quirky = GroundingDinoReward(model_path=gdino_path, dtype="float32", box_threshold=0.0, reference_quirks=True)
    fixed.setup("cpu")
    quirky.setup("cpu")
    # fixed: both nouns found -> 2 / 2; quirk: "red traffic light" is labelled "red light" -> 1 / 2
    assert fixed([record], [image]).scores.item() == 1.0
    assert quirky([record], [image]).scores.item() == pytest.approx(0.5)
    assert {d.label for d in quirky.detect([record.nouns], [image])[0]} == {"cat", "red light"}
