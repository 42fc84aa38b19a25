import pytest
import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from t2ir1.policy.janus import FROZEN_PARTS, CheckpointError, JanusPolicy
from t2ir1.policy.tokenizer import BOI_TOKEN, BOS_TOKEN


def test_tiny_checkpoint_is_a_standard_transformers_janus(tiny_dir):
    assert (tiny_dir / "model.safetensors").is_file()
    model = JanusForConditionalGeneration.from_pretrained(tiny_dir)
    processor = JanusProcessor.from_pretrained(tiny_dir)
    assert processor.tokenizer.boi_token == BOI_TOKEN
    assert model.generation_config.generation_kwargs["boi_token_id"] == processor.tokenizer.convert_tokens_to_ids(BOI_TOKEN)
    assert model.config.vision_config.num_image_tokens == 16  # 32x32 image, 8px patches


def test_exactly_the_language_model_and_lm_head_are_trained(tiny_policy):
    trainable = {n for n, p in tiny_policy.named_parameters() if p.requires_grad}
    assert trainable, "nothing is trainable"
    for name in trainable:
        assert name.startswith(("model.model.language_model.", "model.lm_head.")), name
    lm_names = {f"model.model.language_model.{n}" for n, _ in tiny_policy.language_model.named_parameters()}
    assert lm_names <= trainable
    for part in FROZEN_PARTS:
        module = getattr(tiny_policy.model.model, part)
        assert not any(p.requires_grad for p in module.parameters()), part
    tiny_policy.train()
    assert all(not getattr(tiny_policy.model.model, part).training for part in FROZEN_PARTS)


def test_prompts_are_left_padded_with_bos_and_end_in_begin_of_image(tiny_policy):
    ids, mask = tiny_policy.encode_image_prompts(["a red cube", "two blue balls left of a very green bench"], [None, "x"])
    assert ids.shape == mask.shape
    tok = tiny_policy.tokenizer
    assert (ids[:, -1] == tok.convert_tokens_to_ids(BOI_TOKEN)).all()
    assert mask[0, 0] == 0 and mask[1, 0] == 1  # shorter row padded on the left
    first_real = mask[0].argmax()
    assert ids[0, first_real] == tok.convert_tokens_to_ids(BOS_TOKEN)
    assert (ids[0, :first_real] == tok.pad_token_id).all()
    text = tok.decode(ids[1], skip_special_tokens=False)
    assert text == f"{BOS_TOKEN}<|User|>: two blue balls left of a very green bench. x\n\n<|Assistant|>:{BOI_TOKEN}"


def test_reference_copies_only_the_trained_parts(tiny_policy):
    reference = tiny_policy.make_reference()
    assert reference.language_model is not tiny_policy.language_model
    assert not any(p.requires_grad for p in reference.parameters())
    ref_params = {id(p) for p in reference.parameters()}
    frozen_params = {id(p) for part in FROZEN_PARTS for p in getattr(tiny_policy.model.model, part).parameters()}
    assert not ref_params & frozen_params  # frozen parts are not registered (so not copied or saved twice)
    assert reference._policy is tiny_policy  # but used through the policy itself
    reference.train()
    assert not reference.training


def test_missing_local_checkpoint_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        JanusPolicy.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        JanusPolicy.from_pretrained(tmp_path / "empty")


def test_decode_images_maps_vq_output_to_uint8(tiny_policy):
    tokens = torch.randint(0, 256, (3, tiny_policy.num_image_tokens))
    pixels = tiny_policy.decode_images(tokens, micro_batch_size=2)
    assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == torch.uint8
    raw = tiny_policy.model.model.vqmodel.decode(tokens[:1]).detach()
    expected = ((raw + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    # batched vs single decode may differ in the last float bit, so allow one grey level
    assert (pixels[:1].int() - expected.int()).abs().max() <= 1
