"""HPS member on a tiny open_clip architecture saved in the HPS checkpoint layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from t2ir1.rewards.hps import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, HPSReward, resize_longest_and_pad  # noqa: E402
from t2ir1.testing.tiny_rewards import TINY_HPS_ARCH, build_tiny_hps  # noqa: E402


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
    # a GRPO-like batch: each prompt twice, with different images (each prompt's text encoded once)
    grouped_records = [r for r in records for _ in range(2)]
    grouped_images = [images[(k + offset) % len(images)] for k in range(len(records)) for offset in (0, 1)]
    grouped = reward(grouped_records, grouped_images).scores
    expected = torch.cat(
        [reward([r], [i]).scores for r, i in zip(grouped_records, grouped_images, strict=True)]
    )
    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=0)
    assert not torch.equal(grouped[0::2], grouped[1::2])  # same prompt, other image: another score


def test_resize_longest_and_pad():
    # 64 x 32 white image -> 32 x 16 resized, centred vertically on a 32 x 32 black canvas: rows 8..23 white.
    # 16 x 32 white image (mixed sizes in one batch) -> 16 wide, centred horizontally: columns 8..23 white.
    canvas = resize_longest_and_pad(
        [Image.new("RGB", (64, 32), (255, 255, 255)), Image.new("RGB", (16, 32), (255, 255, 255))], 32
    )
    assert canvas.shape == (2, 3, 32, 32) and canvas.dtype == torch.uint8
    assert canvas[0, :, :8].max() == 0 and canvas[0, :, 24:].max() == 0
    assert canvas[0, :, 8:24].min() == 255
    assert canvas[1, :, :, :8].max() == 0 and canvas[1, :, :, 24:].max() == 0
    assert canvas[1, :, :, 8:24].min() == 255


def _pil_reference(image: Image.Image, size: int) -> np.ndarray:
    """The original HPS preprocessing, one image through PIL: ``[size, size, 3]`` uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    new_width, new_height = round(width * scale), round(height * scale)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    left, top = (size - new_width) // 2, (size - new_height) // 2
    canvas[top : top + new_height, left : left + new_width] = np.asarray(image)
    return canvas


@pytest.mark.parametrize("size", [32, 224])
def test_batched_preprocessing_matches_pil(tiny_hps, size):
    """Tensor resize (torch uint8 antialiased bicubic) vs PIL bicubic, after normalisation scaled back.

    Measured on these images: at most 1 grey level when shrinking and 2 when enlarging
    (rounding of the two kernels), mean below 0.005 levels.
    """
    reward = HPSReward(**tiny_hps[0], dtype="float32")
    reward.setup("cpu")
    reward.image_size = size  # the function under test takes any square size
    generator = np.random.default_rng(1)
    sizes = [(384, 384), (384, 200), (40, 40), (48, 32), (20, 12), (33, 31), (384, 384)]
    images = [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    images.append(images[0].convert("RGBA"))  # a non-RGB mode goes through convert("RGB") like PIL's path
    batched = reward.preprocess(images)  # [8, 3, S, S]
    reference = torch.from_numpy(np.stack([_pil_reference(image, size) for image in images]))  # [8, S, S, 3]
    mean, std = (
        torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1),
        torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1),
    )
    reference = (reference.permute(0, 3, 1, 2).float() / 255 - mean) / std  # [8, 3, S, S]
    levels = ((batched - reference) * std * 255).abs()  # difference in grey levels
    assert levels.max() <= 2 + 1e-3
    assert levels.mean() < 0.01
    # padding stays exactly black: the 384 wide, 200 high image leaves bands above and below at -mean/std
    top = (size - round(200 * size / 384)) // 2
    torch.testing.assert_close(batched[1, :, :top], (-mean / std)[0].expand(3, top, size), atol=1e-6, rtol=0)
    torch.testing.assert_close(batched[1, :, -top:], (-mean / std)[0].expand(3, top, size), atol=1e-6, rtol=0)


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


def test_autocast_option(tiny_hps, records, images):
    """The original scores fp32 weights under fp16 autocast: close to fp32, not bit-equal; bad names refused."""
    full = HPSReward(**tiny_hps[0], dtype="float32")
    full.setup("cpu")
    half = HPSReward(**tiny_hps[0], dtype="float32", autocast="float16")
    half.setup("cpu")
    assert half.model.visual.conv1.weight.dtype == torch.float32  # weights stay fp32
    exact, autocast = full(records, images).scores, half(records, images).scores
    assert autocast.dtype == torch.float32
    difference = (exact - autocast).abs().max().item()
    assert 0 < difference < 2e-2  # fp16 matmuls: rounding-level change (10-bit mantissa)
    with pytest.raises(ValueError, match="autocast 'int8' is unknown"):
        HPSReward(**tiny_hps[0], autocast="int8")
