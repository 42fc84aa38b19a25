"""HPS member on a tiny open_clip architecture saved in the HPS checkpoint layout."""

from __future__ import annotations

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from t2ir1.rewards.hps import HPSReward, resize_longest_and_pad  # noqa: E402
from t2ir1.rewards.tiny import TINY_HPS_ARCH, build_tiny_hps  # noqa: E402


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """The tiny arch JSON and an HPS-layout checkpoint ({"state_dict": ...}); returns (kwargs, saved model)."""
    kwargs = build_tiny_hps(tmp_path_factory.mktemp("hps"))
    model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    model.load_state_dict(torch.load(kwargs["checkpoint"], weights_only=True)["state_dict"])
    return kwargs, model


def test_scores_are_cosines_of_the_saved_model(tiny_hps, records, images):
    kwargs, reference_model = tiny_hps
    reward = HPSReward(**kwargs, dtype="float32", micro_batch_size=2)
    reward.setup("cpu")
    assert not any(p.requires_grad for p in reward.model.parameters())
    assert not reward.model.training
    out = reward(records, images)
    assert out.scores.shape == (5,) and out.scores.dtype == torch.float32
    assert ((out.scores >= -1) & (out.scores <= 1)).all()
    # recompute by hand with the model that was saved: cosine of normalised features
    pixels = reward.preprocess(images)
    tokens = open_clip.get_tokenizer(TINY_HPS_ARCH)([r.prompt for r in records])
    with torch.no_grad():
        img = reference_model.eval().encode_image(pixels)
        txt = reference_model.encode_text(tokens)
    expected = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=0)


def test_batching_invariance(tiny_hps, records, images):
    reward = HPSReward(**tiny_hps[0], dtype="float32", micro_batch_size=16)
    reward.setup("cpu")
    batched = reward(records, images).scores
    single = torch.cat([reward([r], [i]).scores for r, i in zip(records, images, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_resize_longest_and_pad():
    from PIL import Image

    # 64 x 32 white image -> 32 x 16 resized, centred vertically on a 32 x 32 black canvas: rows 8..23 white.
    canvas = resize_longest_and_pad(Image.new("RGB", (64, 32), (255, 255, 255)), 32)
    assert canvas.shape == (32, 32, 3)
    assert canvas[:8].max() == 0 and canvas[24:].max() == 0
    assert canvas[8:24].min() == 255


def test_clear_errors(tiny_hps, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HPSReward(
            checkpoint=str(tmp_path / "missing.pt"),
            **{k: v for k, v in tiny_hps[0].items() if k != "checkpoint"},
        ).setup()
    with pytest.raises(ValueError, match="no architecture 'ViT-nope'"):
        HPSReward(checkpoint=tiny_hps[0]["checkpoint"], arch="ViT-nope").setup()
    # a checkpoint of another architecture does not fit
    torch.save({"state_dict": {"visual.proj": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit"):
        HPSReward(checkpoint=str(tmp_path / "bad.pt"), arch=TINY_HPS_ARCH).setup()
    with pytest.raises(RuntimeError, match="setup"):
        HPSReward(**tiny_hps[0])([], [])
