"""The shipped ShapeWorld checkpoint and the recipe that builds it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors import safe_open

from t2ir1.policy.janus import CheckpointError, JanusPolicy
from t2ir1.policy.prompts import DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT, image_prompt, semantic_prompt
from t2ir1.shapeworld import CHECKPOINT_DIR, checkpoint_path, load_policy
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.pretrain import (
    PretrainConfig,
    from_pixels,
    main,
    pad_rows,
    pretrain,
    quantize,
    sft_examples,
    to_pixels,
)
from t2ir1.shapeworld.prompts import heldout_records, scene_for, scene_seed, training_records
from t2ir1.shapeworld.render import render
from t2ir1.shapeworld.reward import is_correct

CONF = Path(__file__).resolve().parents[2] / "conf"
# The size limit of the shipped checkpoint.
MAX_CHECKPOINT_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def policy() -> JanusPolicy:
    return load_policy()


def test_shipped_checkpoint_is_small_safetensors_with_processor():
    path = checkpoint_path()
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)  # safetensors only
    assert sum(p.stat().st_size for p in path.iterdir()) <= MAX_CHECKPOINT_BYTES


def test_loads_through_the_model_config_like_any_checkpoint(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=shapeworld", f"paths.output_dir={tmp_path}"])
    policy = instantiate(cfg.model)()
    assert isinstance(policy, JanusPolicy)
    # 64x64 images in 8x8 patches: 8 x 8 = 64 image tokens (what the world and detector use)
    assert policy.image_size == 64 and policy.num_image_tokens == 64
    assert next(policy.parameters()).dtype == torch.float32
    # RL trains the language model and lm_head only (REFERENCE §1)
    assert policy.lm_head.weight.requires_grad
    assert not policy.model.model.vqmodel.quantize.embedding.weight.requires_grad


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_policy(tmp_path / "nowhere")


def test_recorded_recipe_describes_the_shipped_weights(policy):
    """pretrain.json travels with the weights: its architecture is the one that loads (a rebuild
    that forgets to rewrite it fails here); its figures are re-measured by the tests below."""
    spec = json.loads((CHECKPOINT_DIR / "pretrain.json").read_text())["config"]["spec"]
    config = policy.model.config
    assert config.text_config.hidden_size == spec["hidden_size"]
    assert config.text_config.num_hidden_layers == spec["num_hidden_layers"]
    assert config.text_config.vocab_size == spec["vocab_size"]
    assert config.vq_config.num_embeddings == spec["codebook_size"]
    assert policy.image_size == spec["image_size"]
    assert policy.num_image_tokens == (spec["image_size"] // spec["patch_size"]) ** 2


def test_vq_reconstructions_of_ground_truth_scenes_are_read_by_the_detector(policy):
    records = heldout_records(24)
    scenes = [scene_for(r, scene_seed(r, seed=7)) for r in records]
    vq = policy.model.model.vqmodel
    with torch.no_grad():
        codes = vq.encode(to_pixels([render(s) for s in scenes])).image_tokens.view(len(scenes), -1)
    decoded = policy.decode_images(codes)  # [N, 64, 64, 3] uint8, the RL loop's own decode
    detections = ShapeDetector().detect(list(decoded.numpy()))
    correct = [is_correct(r, d) for r, d in zip(records, detections, strict=True)]
    assert sum(correct) >= 0.75 * len(correct)


def test_tokenizer_knows_the_world_and_the_special_tokens(policy):
    tokenizer = policy.tokenizer
    ids = tokenizer(semantic_prompt("a photo of two red crosses", DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT))[
        "input_ids"
    ]
    assert ids[0] == tokenizer.bos_token_id
    # the tokenizer was trained on the world's texts: every shape and colour word is one BPE token
    for word in ("circle", "square", "triangle", "cross", "red", "green", "blue", "yellow", "purple"):
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    assert tokenizer.convert_tokens_to_ids(tokenizer.boi_token) != tokenizer.unk_token_id


def test_pretrained_model_describes_a_prompt_greedily(policy):
    # Greedy decoding of the semantic CoT names the prompt's shape and colour (SFT target:
    # "A red square at the <region>."), ends with EOS within 40 tokens.
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions

    ids, mask = policy.encode_semantic_prompts(
        ["a photo of a red square"], DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT
    )
    engine = GenerationEngine(policy, SamplingOptions(max_new_tokens=40, text_temperature=0.0))
    rollout = engine.sample_cot(ids, mask, 1, None)
    text = rollout["texts"][0].lower()
    assert "red square" in text
    assert rollout["completion_ids"][0, rollout["completion_mask"][0].sum() - 1] == policy.eos_id


def test_quantize_uses_unit_codes_and_agrees_with_transformers_encode(policy):
    vq = policy.model.model.vqmodel
    # the shipped codebook is kept at unit norm, so Euclidean argmin (transformers) == cosine argmax (training)
    norms = vq.quantize.embedding.weight.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    pixels = to_pixels([render(scene_for(r, 3)) for r in heldout_records(4)])
    with torch.no_grad():
        latents = vq.quant_conv(vq.encoder(pixels))  # [4, 8, 8, 8]
        quantized, codes, losses = quantize(vq, latents)
        assert torch.equal(codes, vq.encode(pixels).image_tokens.view(4, -1))
    expected = F.normalize(vq.quantize.embedding.weight, dim=-1)[codes]  # [4, 64, D]
    assert torch.allclose(quantized.permute(0, 2, 3, 1).reshape(4, 64, -1), expected, atol=1e-6)
    assert losses.shape == (2,) and (losses >= 0).all()


def test_pixels_round_trip():
    image = render(scene_for(heldout_records(1)[0], 0))
    pixels = to_pixels([image])  # [1, 3, 64, 64] in [-1, 1]
    assert pixels.min() >= -1 and pixels.max() <= 1
    # 255 -> 1.0 -> (1 + 1) / 2 * 255 = 255; 20 -> -0.843 -> 20
    assert (from_pixels(pixels)[0] == np.array(image)).all()


def test_pad_rows_pads_on_the_asked_side():
    rows = [[5, 6, 7], [8]]
    ids, mask = pad_rows(rows, 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows(rows, 0, "right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="side must be 'left' or 'right'"):
        pad_rows(rows, 0, "middle")


def test_sft_examples_use_the_rl_prompt_builders(policy):
    tokenizer = policy.tokenizer
    records = training_records(2)
    descriptions = ["A red square at the top.", "Two blue circles at the left."]
    examples = sft_examples(tokenizer, records, descriptions)
    assert tokenizer.decode(examples["semantic"][0], skip_special_tokens=False).endswith(
        semantic_prompt(records[0].prompt, DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT)
    )
    # the completion is " " + description + EOS, as sampled after "<|Assistant|>:"
    assert examples["completion"][1][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(examples["completion"][1][:-1]) == " Two blue circles at the left."
    # image prompts end in <begin_of_image>; the bare variant has no description
    image_text = tokenizer.decode(examples["image_prompt"][0])
    assert image_text.endswith(image_prompt(records[0].prompt, descriptions[0]) + tokenizer.boi_token)
    assert tokenizer.decode(examples["bare_image_prompt"][0]).endswith(
        image_prompt(records[0].prompt, None) + tokenizer.boi_token
    )


def test_recipe_end_to_end_at_toy_length_writes_a_loadable_checkpoint(tmp_path):
    cfg = PretrainConfig(
        num_scenes=24,
        vq_steps=3,
        vq_full_steps=1,
        vq_batch_size=4,
        sft_steps=2,
        sft_text_batch_size=2,
        sft_image_batch_size=2,
        sft_warmup_steps=1,
        recon_eval_size=6,
        threads=1,
    )
    figures = pretrain(tmp_path / "ckpt", cfg)
    assert set(figures) >= {"vq", "sft", "total_seconds"}
    policy = load_policy(tmp_path / "ckpt")
    assert policy.num_image_tokens == 64
    vq = policy.model.model.vqmodel
    assert torch.allclose(
        vq.quantize.embedding.weight.norm(dim=-1), torch.ones(vq.quantize.num_embeddings), atol=1e-4
    )
    assert not list((tmp_path).glob("*.tmp*"))  # staging directory renamed into place


def test_cli_builds_a_wider_model_on_the_shipped_vq(tmp_path):
    """`--hidden-size/--heads/--kv-heads/--sft-lr/--vq-from/--save-dtype`: the width that lets the image stage bind
    objects, stored in bfloat16 (half the bytes) and read back at the loader's float32."""
    out = tmp_path / "wide"
    argv = ["--out", str(out), "--num-scenes", "8", "--sft-steps", "1", "--threads", "1"]
    figures = main([*argv, "--vq-from", str(CHECKPOINT_DIR), "--hidden-size", "64", "--heads", "4", "--kv-heads", "2",
                    "--sft-lr", "3e-4", "--save-dtype", "bfloat16"])  # fmt: skip
    recipe = json.loads((out / "pretrain.json").read_text())
    spec = recipe["config"]["spec"]
    assert (spec["hidden_size"], spec["intermediate_size"]) == (64, 128)
    assert (spec["num_attention_heads"], spec["num_key_value_heads"]) == (4, 2)
    assert recipe["config"]["sft_lr"] == 3e-4 and figures["vq"]["reused_from"] == str(CHECKPOINT_DIR)
    with safe_open(out / "model.safetensors", framework="pt") as stored:
        assert {stored.get_slice(name).get_dtype() for name in stored.keys()} == {"BF16"}
    policy = load_policy(out)
    text_config = policy.model.config.text_config
    assert (text_config.hidden_size, text_config.num_attention_heads) == (64, 4)
    assert {p.dtype for p in policy.model.parameters()} == {torch.float32}
    with pytest.raises(SystemExit):
        main([*argv, "--hidden-size", "100", "--heads", "8"])  # 100 is not a multiple of 8


def test_pretrain_refuses_an_unknown_save_dtype_before_any_work(tmp_path):
    """A save dtype the recipe cannot store fails at once, not after an hour of training at the save."""
    cfg = PretrainConfig(num_scenes=8, sft_steps=1, vq_from=str(CHECKPOINT_DIR), save_dtype="float16")
    with pytest.raises(ValueError, match="save_dtype must be one of .*float16"):
        pretrain(tmp_path / "out", cfg)
    assert not any(tmp_path.iterdir())  # nothing built or staged


def test_cli_help_explains_every_option_with_its_default(capsys):
    """`--help` says what each flag does; the recipe's numbers shown are the config's own defaults."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = PretrainConfig()
    for flag, default in [
        ("--seed", defaults.seed),
        ("--num-scenes", defaults.num_scenes),
        ("--vq-steps", defaults.vq_steps),
        ("--sft-steps", defaults.sft_steps),
        ("--sft-lr", f"{defaults.sft_lr:g}"),
        ("--threads", defaults.threads),
    ]:
        upper = flag[2:].upper().replace("-", "_")
        described = text.split(f"{flag} {upper} ", 1)[1].split(" --", 1)[0]
        assert f"(default {default})" in described, (flag, described)
