"""ColorAgreementReward: hand-worked fractions, fallback, batching invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.color import ColorAgreementReward


def _image(left_rgb, right_rgb, left_cols: int, size: int = 64) -> Image.Image:
    """A size x size image whose first ``left_cols`` columns are left_rgb, the rest right_rgb."""
    array = np.empty((size, size, 3), dtype=np.uint8)
    array[:, :left_cols] = left_rgb
    array[:, left_cols:] = right_rgb
    return Image.fromarray(array)


def _record(prompt: str) -> PromptRecord:
    return PromptRecord(prompt=prompt, task_type="color")


def test_fraction_scores_by_hand():
    reward = ColorAgreementReward(target_fraction=0.2)
    # 8 of 64 columns red (1/8 = 0.125), the rest a near-blue (nearest prototype blue).
    image = _image((250, 10, 5), (10, 10, 240), left_cols=8)
    out = reward(
        [_record("a red ball"), _record("a blue sky"), _record("a red ball and a blue sky")], [image] * 3
    )
    # red: min(1, 0.125 / 0.2) = 0.625; blue: min(1, 0.875 / 0.2) = 1; both: (0.625 + 1) / 2
    assert out.scores.tolist() == pytest.approx([0.625, 1.0, 0.8125])
    assert out.scores.dtype == torch.float32
    assert out.extras["colour_words"].tolist() == [1, 1, 2]


def test_missing_colour_scores_zero_and_aliases():
    reward = ColorAgreementReward()
    image = _image((0, 0, 255), (0, 0, 255), left_cols=32)
    out = reward([_record("A GREEN frog"), _record("a grey cat"), _record("a gray gray cat")], [image] * 3)
    # no green or gray pixel at all -> 0 for each (gray/grey share one prototype, counted once)
    assert out.scores.tolist() == [0.0, 0.0, 0.0]
    assert out.extras["colour_words"].tolist() == [1, 1, 1]


def test_fallback_colourfulness():
    reward = ColorAgreementReward(target_fraction=0.2)
    gray = _image((128, 128, 128), (0, 0, 0), left_cols=32)
    # 4 of 64 columns yellow -> chromatic fraction 1/16 -> 0.0625 / 0.2 = 0.3125
    some_colour = _image((255, 250, 0), (255, 255, 255), left_cols=4)
    out = reward([_record("a cat"), _record("a cat")], [gray, some_colour])
    assert out.scores.tolist() == pytest.approx([0.0, 0.3125])


def test_batching_invariance_and_range():
    reward = ColorAgreementReward()
    generator = np.random.default_rng(0)
    images = [Image.fromarray(generator.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(5)]
    records = [
        _record(p) for p in ["red car", "a blue and yellow bird", "a dog", "white snow", "pink and brown"]
    ]
    batched = reward(records, images).scores
    single = torch.cat([reward([r], [i]).scores for r, i in zip(records, images, strict=True)])
    assert batched.shape == (5,)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert ((batched >= 0) & (batched <= 1)).all()


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="palette\\['red'\\]"):
        ColorAgreementReward(palette={"red": [300, 0, 0]})
    with pytest.raises(ValueError, match="target_fraction"):
        ColorAgreementReward(target_fraction=0.0)
    with pytest.raises(ValueError, match="2 records but 1 images"):
        ColorAgreementReward()([_record("a"), _record("b")], [_image((0, 0, 0), (0, 0, 0), 1)])


def test_nearest_prototype_matches_euclidean_argmin():
    """The matmul form picks the same prototype as an explicit distance argmin, ties included."""
    reward = ColorAgreementReward()
    generator = np.random.default_rng(3)
    pixels = torch.from_numpy(generator.integers(0, 256, (4, 500, 3))).float()  # [4, 500, 3]
    # (0, 64, 0) is 64^2 = 4096 from both green (0, 128, 0) and black (0, 0, 0), farther from the rest:
    # the first in palette order (green) wins
    pixels[0, 0] = torch.tensor([0.0, 64.0, 0.0])
    distances = ((pixels[:, :, None] - reward._prototypes[None, None]) ** 2).sum(-1)  # [4, 500, K]
    expected = distances.argmin(dim=-1)  # first minimum on ties
    assert torch.equal(reward.nearest_prototype(pixels), expected)
    green = reward.colour_indices("green")[0]
    assert green < reward.colour_indices("black")[0]
    assert reward.nearest_prototype(pixels)[0, 0].item() == green
