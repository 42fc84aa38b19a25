"""convert_orm round trip and the ORM member on a tiny LLaVA-OneVision written in the LLaVA-NeXT layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from t2ir1.rewards.convert_orm import ConversionError, convert, convert_key, main
from t2ir1.rewards.orm import OutcomeRewardModel, pad_and_resize, pad_to_square
from t2ir1.testing.tiny_rewards import build_tiny_llava_next_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orm")
    source = build_tiny_llava_next_checkpoint(folder)
    converted = folder / "hf"
    main([str(source), str(converted), "--vision-num-heads", "2"])  # the CLI path users run
    return source, converted


@pytest.fixture(scope="module")
def reward(checkpoints):
    member = OutcomeRewardModel(model_path=str(checkpoints[1]), dtype="float32", micro_batch_size=8)
    member.setup("cpu")
    return member


def test_key_mapping():
    assert convert_key("model.mm_projector.0.weight") == "model.multi_modal_projector.linear_1.weight"
    assert convert_key("model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert (
        convert_key("model.layers.3.mlp.up_proj.weight") == "model.language_model.layers.3.mlp.up_proj.weight"
    )
    assert convert_key("model.image_newline") == "model.image_newline"
    assert convert_key("lm_head.weight") == "lm_head.weight"
    assert convert_key("model.vision_tower.vision_tower.vision_model.head.mlp.fc1.weight") is None
    with pytest.raises(ConversionError, match="unknown key 'model.mystery'"):
        convert_key("model.mystery")


def test_round_trip_loads_with_every_weight(checkpoints):
    from transformers import LlavaOnevisionForConditionalGeneration

    source, converted = checkpoints
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(converted, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original = load_file(source / "model.safetensors")
    state = model.state_dict()
    torch.testing.assert_close(
        state["model.multi_modal_projector.linear_1.weight"], original["model.mm_projector.0.weight"]
    )
    torch.testing.assert_close(state["model.image_newline"], original["model.image_newline"])
    torch.testing.assert_close(
        state["model.language_model.layers.1.self_attn.q_proj.weight"],
        original["model.layers.1.self_attn.q_proj.weight"],
    )
    vision_key = next(
        k for k in state if k.endswith("encoder.layers.0.mlp.fc1.weight") and "vision_tower" in k
    )
    torch.testing.assert_close(
        state[vision_key],
        original["model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"],
    )
    # two new tokens (<image>, <video>): the embedding grew by 2 rows, old rows untouched
    embed = state["model.language_model.embed_tokens.weight"]
    assert embed.shape[0] == original["model.embed_tokens.weight"].shape[0] + 2
    torch.testing.assert_close(embed[:-2], original["model.embed_tokens.weight"])
    assert model.config.vision_config.image_size == 32 and model.config.vision_config.num_hidden_layers == 2


def test_conversion_errors(tmp_path, checkpoints):
    with pytest.raises(ConversionError, match="no config.json"):
        convert(tmp_path, tmp_path / "out")
    with pytest.raises(ConversionError, match="not divisible"):
        convert(checkpoints[0], tmp_path / "out", vision_num_heads=5)


def _hand_score(reward: OutcomeRewardModel, prompt: str, image) -> float:
    """Independent path: splice the image features into the full model's input embeddings."""
    pixels = reward.preprocess([image])
    features = reward.image_features(pixels)[0]  # [N + 1, D]
    ids = torch.tensor([reward.prompt_ids(prompt, features.shape[0])])
    embeds = reward.model.get_input_embeddings()(ids)
    embeds[ids == reward.image_token_id] = features
    with torch.no_grad():
        probs = (reward.model(inputs_embeds=embeds).logits[0, -1] / reward.temperature).softmax(-1)
    p_yes, p_no = probs[reward.yes_ids].sum().item(), probs[reward.no_ids].sum().item()
    return p_yes / (p_yes + p_no)


def test_member_scores(reward, records, images):
    assert not reward.model.training and not any(p.requires_grad for p in reward.model.parameters())
    out = reward(records, images)
    assert out.scores.shape == (5,) and out.scores.dtype == torch.float32
    assert ((out.scores > 0) & (out.scores < 1)).all()
    for index in (0, 2):
        assert out.scores[index].item() == pytest.approx(
            _hand_score(reward, records[index].prompt, images[index]), abs=1e-5
        )
    # the question holds the prompt and exactly N + 1 image tokens
    ids = reward.prompt_ids("a red cat", 17)
    assert ids.count(reward.image_token_id) == 17
    assert "a red cat" in reward.tokenizer.decode(ids)


def test_batching_invariance(reward, records, images):
    batched = reward(records, images).scores
    single = torch.cat([reward([r], [i]).scores for r, i in zip(records, images, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_pad_to_square_uses_fill():
    # a 4 wide, 2 high red image on a 4 x 4 grey square: rows 1..2 red, rows 0 and 3 grey
    pixels = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 4)
    square = pad_to_square(pixels, (127, 127, 127))
    assert square.shape == (1, 3, 4, 4)
    assert square[0, :, 0, 0].tolist() == [127, 127, 127] and square[0, :, 3, 3].tolist() == [127, 127, 127]
    assert square[0, :, 1:3].flatten(1).T.unique(dim=0).tolist() == [[255, 0, 0]]
    assert pad_to_square(square, (0, 0, 0)) is square  # already square: returned as it is


def _pil_reference(image: Image.Image, fill: tuple[int, int, int], size: int) -> np.ndarray:
    """The original LLaVA preprocessing, one image through PIL: ``expand2square`` then bicubic resize."""
    image = image.convert("RGB")
    width, height = image.size
    if width != height:
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def test_batched_preprocessing_matches_pil(reward):
    """Tensor pad + resize (torch uint8 antialiased bicubic) vs the PIL path, after normalisation scaled back.

    Measured on these images: at most 1 grey level at 32 px (2 when enlarging to 224),
    mean below 0.005 levels.
    """
    generator = np.random.default_rng(2)
    sizes = [(384, 384), (384, 200), (200, 384), (40, 40), (20, 12), (33, 31), (384, 384)]
    images = [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    batched = reward.preprocess(images)  # [7, 3, 32, 32]
    assert batched.shape == (7, 3, reward.image_size, reward.image_size)
    reference = np.stack([_pil_reference(image, reward.pad_colour, reward.image_size) for image in images])
    reference = (torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255 - reward.image_mean) / (
        reward.image_std
    )  # [7, 3, 32, 32]
    levels = ((batched - reference) * reward.image_std * 255).abs()
    assert levels.max() <= 1 + 1e-3
    assert levels.mean() < 0.01
    # enlarging: the 20 x 12 image to 224 px
    enlarged = pad_and_resize(images[4:5], reward.pad_colour, 224).permute(0, 2, 3, 1).numpy().astype(int)
    pil = _pil_reference(images[4], reward.pad_colour, 224).astype(int)
    assert np.abs(enlarged[0] - pil).max() <= 2


# --- readouts (REFERENCE §3 orm row): temperature, lowercase ids, the original's sampled draw ---


@pytest.fixture(scope="module")
def paper_reward(checkpoints):
    """The paper preset's readout: sampled, temperature 0.3, lowercase yes / no only."""
    member = OutcomeRewardModel(
        model_path=str(checkpoints[1]),
        dtype="float32",
        yes_tokens=("yes",),
        no_tokens=("no",),
        temperature=0.3,
        readout="sampled",
        seed=0,
    )
    member.setup("cpu")
    return member


def _logits(reward: OutcomeRewardModel, rows: int = 1, **values: float) -> torch.Tensor:
    """``[rows, V]`` first-token logits: -30 everywhere except the named tokens."""
    logits = torch.full((rows, len(reward.tokenizer)), -30.0)
    for token, value in values.items():
        logits[:, reward.tokenizer.convert_tokens_to_ids(token)] = value
    return logits


def test_forward_readout_temperature(checkpoints):
    """(z_yes, z_no) = (1, 0): sigmoid(1 / 0.3) = 0.966 at the paper's temperature, sigmoid(1) = 0.731 at 1."""
    member = OutcomeRewardModel(model_path=str(checkpoints[1]), dtype="float32", yes_tokens=("yes",), no_tokens=("no",))
    member.setup("cpu")
    assert member.temperature == 0.3 and member.readout == "forward"  # paper defaults
    assert member.readout_scores(_logits(member, yes=1.0, no=0.0)).item() == pytest.approx(0.9656, abs=1e-4)
    member.temperature = 1.0
    assert member.readout_scores(_logits(member, yes=1.0, no=0.0)).item() == pytest.approx(0.7311, abs=1e-4)
    # summing the capitalised forms in (t2ir1's default spellings) changes the score when they disagree:
    # z_Yes = 1, z_No = -30 at T 1: (e + e) / (e + e + 1 + e^-30) = 2e / (2e + 1) = 0.8446
    both = OutcomeRewardModel(model_path=str(checkpoints[1]), dtype="float32", temperature=1.0)
    both.setup("cpu")
    assert both.readout_scores(_logits(both, yes=1.0, no=0.0, Yes=1.0)).item() == pytest.approx(0.8446, abs=1e-4)


def test_sampled_readout_scores_zero_when_the_draw_is_not_yes_or_no(paper_reward):
    # yes dominates the draw: the score is the ratio, sigmoid(1 / 0.3) with z_cat far below
    logits = _logits(paper_reward, rows=4, yes=12.0, no=11.0)
    torch.testing.assert_close(paper_reward.readout_scores(logits), torch.full((4,), 0.9656), atol=1e-4, rtol=0)
    # "cat" dominates (P(cat) = 1 - O(e^-30)): every draw fails -> 0, where the forward readout says 0.966
    logits = _logits(paper_reward, rows=4, cat=10.0, yes=1.0, no=0.0)
    assert paper_reward.readout_scores(logits).tolist() == [0.0] * 4
    # a drawn "Yes" passes the original's lower().strip() check, but only lowercase ids are read:
    # z_Yes = 10 wins the draw; ratio over yes / no = sigmoid((1 - 0) / 0.3) = 0.966
    logits = _logits(paper_reward, rows=4, Yes=10.0, yes=1.0, no=0.0)
    torch.testing.assert_close(paper_reward.readout_scores(logits), torch.full((4,), 0.9656), atol=1e-4, rtol=0)


def test_sampled_readout_top_k(paper_reward):
    """top_k 2 keeps cat (2) and yes (1); no (0) is cut, so P(no) = 0 and an answered draw scores 1.

    The draw picks yes with probability 1 / (1 + e^(1 / 0.3)) = 0.034, otherwise cat (score 0).
    """
    paper_reward.sample_top_k = 2
    try:
        scores = paper_reward.readout_scores(_logits(paper_reward, rows=400, cat=2.0, yes=1.0, no=0.0))
    finally:
        paper_reward.sample_top_k = 50
    assert set(scores.tolist()) == {0.0, 1.0}
    assert 0.005 < scores.mean().item() < 0.08  # 0.034 expected; 400 draws: std 0.009


def test_answer_token_ids_follow_the_original_check(paper_reward):
    tokens = set(paper_reward.tokenizer.convert_ids_to_tokens(paper_reward.answer_ids.tolist()))
    assert {"yes", "no", "Yes", "No"} <= tokens
    assert all(token.lower().strip() in ("yes", "no") for token in tokens)


def test_sampled_member_end_to_end(checkpoints, paper_reward, records, images):
    """Each sampled score is 0 (failed draw) or the forward ratio over the same warped distribution."""
    forward = OutcomeRewardModel(
        model_path=str(checkpoints[1]), dtype="float32", yes_tokens=("yes",), no_tokens=("no",), readout="forward"
    )
    forward.setup("cpu")
    paper_reward.sample_top_k = 0  # the tiny random judge may rank yes / no below 50
    try:
        sampled = paper_reward(records, images).scores
    finally:
        paper_reward.sample_top_k = 50
    expected = forward(records, images).scores
    for got, ratio in zip(sampled.tolist(), expected.tolist(), strict=True):
        assert got == 0.0 or got == pytest.approx(ratio, abs=1e-6)


def test_readout_errors(checkpoints):
    with pytest.raises(ValueError, match="readout 'greedy' is unknown"):
        OutcomeRewardModel(model_path=str(checkpoints[1]), readout="greedy")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        OutcomeRewardModel(model_path=str(checkpoints[1]), temperature=0.0)


def test_image_features_equal_the_models_public_feature_path(reward, images):
    """The member's re-stated LLaVA-OneVision feature path (one crop + image_newline) is what
    transformers' public ``get_image_features`` computes for images that are not tiled (several
    images per sample: one patch each, then the newline row)."""
    pixels = reward.preprocess(images[:2])  # [2, 3, S, S]
    config = reward.model.config
    size = pixels.shape[-1]
    with torch.no_grad():
        public = reward.model.model.get_image_features(
            pixel_values=pixels,
            image_sizes=torch.tensor([[size, size]] * 2),
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            batch_num_images=torch.tensor([2]),
            output_hidden_states=True,
        ).pooler_output
        ours = reward.image_features(pixels)  # [2, N + 1, D]
    assert len(public) == 2
    for row, features in enumerate(public):
        assert features.shape == ours[row].shape
        torch.testing.assert_close(ours[row], features)
