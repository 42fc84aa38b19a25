import pytest
import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from t2ir1.policy.janus import FROZEN_PARTS, CheckpointError, JanusPolicy, pixels_to_uint8
from t2ir1.policy.logprobs import positions_from_mask
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
    pixels = tiny_policy.decode_images(tokens, micro_batch_size=2, dtype="model")
    assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == torch.uint8
    raw = tiny_policy.model.model.vqmodel.decode(tokens).detach()  # transformers' own decode, NCHW
    expected = ((raw + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    # channels-last convolutions (CPU) and other batch sizes may differ in the last float bit: one grey level
    assert (pixels.int() - expected.int()).abs().max() <= 1
    assert (pixels != expected).float().mean() < 0.01


def test_small_channels_last_groupnorms_run_in_nchw_inside_the_context_only():
    from t2ir1.policy.janus import groupnorm_in_nchw

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.GroupNorm(4, 8), torch.nn.SiLU())
    seen = []
    net[0].register_forward_hook(lambda norm, args, out: seen.append(args[0].is_contiguous()))
    small = torch.randn(2, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    large = torch.randn(2, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    with groupnorm_in_nchw(net, max_side=16):
        out_small, out_large, nchw = net(small), net(large), net(small.contiguous())
    # the 8x8 map was normalised in NCHW (the forward saw a contiguous tensor) and comes back channels-last,
    # with the NCHW result; the 32x32 map and the NCHW input pass as they are
    assert seen == [True, False, True]
    assert out_small.is_contiguous(memory_format=torch.channels_last) and not out_small.is_contiguous()
    assert torch.equal(out_small, nchw)
    assert out_large.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out_large, net(large.contiguous()), atol=1e-5)
    seen.clear()
    net(small)  # outside the context: the channels-last input reaches the GroupNorm again
    assert seen == [False] and len(net[0]._forward_pre_hooks) == 0 and len(net[0]._forward_hooks) == 1


def test_bfloat16_decode_stays_within_a_few_grey_levels_and_auto_follows_the_cpu(tiny_policy):
    from t2ir1.policy.janus import native_cpu_bfloat16

    tokens = torch.randint(0, 256, (4, tiny_policy.num_image_tokens), generator=torch.Generator().manual_seed(0))
    model = tiny_policy.decode_images(tokens, dtype="model").int()
    bf16 = tiny_policy.decode_images(tokens, dtype="bfloat16").int()
    assert not torch.equal(bf16, model)  # bfloat16 arithmetic did run
    assert (bf16 - model).abs().float().mean() < 1.5 and (bf16 - model).abs().max() <= 16
    auto = tiny_policy.decode_images(tokens).int()
    assert torch.equal(auto, bf16 if native_cpu_bfloat16() else model)
    with pytest.raises(ValueError, match="decode dtype 'fp8' is unknown"):
        tiny_policy.decode_images(tokens, dtype="fp8")


def test_uint8_truncation_quirk_floors_where_rounding_goes_up(tiny_policy):
    # x = 0.998: (x + 1) / 2 * 255 = 0.999 * 255 = 254.745 -> 255 rounded, 254 truncated (the original's
    # numpy cast); -1 -> 0 and 1.5 -> 255 (clipped) either way
    pixels = torch.tensor([0.998, -1.0, 1.5])
    assert pixels_to_uint8(pixels).tolist() == [255, 0, 255]
    assert pixels_to_uint8(pixels, truncate=True).tolist() == [254, 0, 255]
    tokens = torch.randint(0, 256, (2, tiny_policy.num_image_tokens))
    rounded = tiny_policy.decode_images(tokens).int()
    truncated = tiny_policy.decode_images(tokens, truncate=True).int()
    assert (truncated <= rounded).all() and (rounded - truncated).max() == 1  # the quirk loses up to one level
    assert (rounded != truncated).float().mean() > 0.2  # about half of the pixels round up


def test_reference_reading_the_policys_embeddings_misses_their_drift(tiny_policy):
    """The original's reference forward reads the policy's text embeddings (grpo_trainer.py:511, 646-654):
    after the policy's embedding rows drift, its log-probs move with them; t2ir1's reference does not move."""
    own = tiny_policy.make_reference()
    quirk = tiny_policy.make_reference(reads_policy_embeddings=True)
    prompt_ids, prompt_mask = tiny_policy.encode_semantic_prompts(["a red cube", "two cats"], "Say {}.", "S")
    completion = torch.randint(5, 400, (2, 6))
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    img_ids, img_mask = tiny_policy.encode_image_prompts(["a red cube", "two cats"], ["It sits.", None])
    image_tokens = torch.randint(0, 256, (2, tiny_policy.num_image_tokens))
    text_args, image_args = (prompt_ids, prompt_mask, completion, completion_mask), (img_ids, img_mask, image_tokens)
    text_before, image_before = own.text_logprobs(*text_args), own.image_logprobs(*image_args)
    # before any update both references read equal tables
    assert torch.equal(quirk.text_logprobs(*text_args), text_before)
    assert torch.equal(quirk.image_logprobs(*image_args), image_before)
    table = tiny_policy.language_model.get_input_embeddings().weight
    used = torch.cat([prompt_ids.flatten(), completion.flatten(), img_ids.flatten()]).unique()
    with torch.no_grad():  # the policy's text embeddings drift on the rows these sequences use
        table[used] += 0.5 * torch.randn(len(used), table.shape[1], generator=torch.Generator().manual_seed(0))
    keep = completion_mask.bool()
    # fixed: the reference's own table, unchanged
    assert torch.equal(own.text_logprobs(*text_args), text_before)
    assert torch.equal(own.image_logprobs(*image_args), image_before)
    # quirk: moved, and equal to the reference's layers run on the policy's embeddings, by hand
    text_quirk, image_quirk = quirk.text_logprobs(*text_args), quirk.image_logprobs(*image_args)
    assert (text_quirk - text_before)[keep].abs().max() > 1e-2 and (image_quirk - image_before).abs().max() > 1e-2
    lm, head = own.language_model, own.lm_head
    with torch.no_grad():
        ids, mask = torch.cat([prompt_ids, completion], 1), torch.cat([prompt_mask, completion_mask], 1)
        hidden = lm(inputs_embeds=table[ids], attention_mask=mask, position_ids=positions_from_mask(mask)).last_hidden_state
        logits = head(hidden[:, prompt_ids.shape[1] - 1 : -1]).float()
        expected = torch.log_softmax(logits, -1).gather(-1, completion[..., None]).squeeze(-1)
        assert torch.allclose(text_quirk[keep], expected[keep], atol=1e-5)
        embeds = torch.cat([table[img_ids], tiny_policy.embed_image_tokens(image_tokens[:, :-1])], 1)
        mask = torch.cat([img_mask, torch.ones_like(image_tokens[:, :-1])], 1)
        hidden = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask)).last_hidden_state
        logits = tiny_policy.generation_head(hidden[:, img_ids.shape[1] - 1 :]).float()
        expected = torch.log_softmax(logits, -1).gather(-1, image_tokens[..., None]).squeeze(-1)
        assert torch.allclose(image_quirk, expected, atol=1e-5)
