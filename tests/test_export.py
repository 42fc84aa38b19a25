"""Export: training checkpoint -> transformers Janus; DeepSeek's layout -> transformers Janus."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, JanusForConditionalGeneration
from workflow_runs import compose_train

from t2ir1.export import ExportError, convert_deepseek_key, main
from t2ir1.policy.janus import JanusPolicy
from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
from t2ir1.train import run


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("models"), TinyJanusSpec())


def test_export_training_checkpoint_merges_policy_weights(tmp_path, tiny_dir):
    cfg = compose_train(tmp_path / "run", "logger=csv", "trainer.max_steps=1", f"paths.cache_dir={tiny_dir.parent.parent}")
    cfg.model.cache_dir = str(tiny_dir.parent)
    run(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "exported"
    assert main([str(ckpt), str(out), "--base", str(tiny_dir)]) == 0

    exported = JanusForConditionalGeneration.from_pretrained(out)
    base = JanusForConditionalGeneration.from_pretrained(tiny_dir)
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    # trained part: the checkpoint's weights, which one AdamW step (lr 1e-3) moved away from the base
    assert torch.equal(exported.lm_head.weight, trained["policy.model.lm_head.weight"])
    assert not torch.equal(exported.lm_head.weight, base.lm_head.weight)
    # frozen part: unchanged
    assert torch.equal(exported.model.vqmodel.quantize.embedding.weight, base.model.vqmodel.quantize.embedding.weight)
    # and the directory is a policy the project's own loader accepts (processor included)
    policy = JanusPolicy.from_pretrained(out, local_files_only=True)
    assert policy.num_image_tokens == TinyJanusSpec().num_image_tokens


def to_deepseek(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tiny transformers state dict in DeepSeek's original names, written out by hand
    (inverse of the conversion): fused qkv, [1, P, D] position embedding, conv_blocks / res / mid.N."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "lm_head.weight":
            out["language_model.lm_head.weight"] = value
            continue
        m = re.match(r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key)
        if m:
            layer, which, kind = m.groups()
            if which == "q":
                parts = [state[f"model.vision_model.encoder.layers.{layer}.self_attn.{x}_proj.{kind}"] for x in "qkv"]
                out[f"vision_model.vision_tower.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
            continue
        k = key
        k = k.replace("model.vision_model.embeddings.position_embedding.weight", "vision_model.vision_tower.pos_embed")
        if k == "vision_model.vision_tower.pos_embed":
            out[k] = value.unsqueeze(0)
            continue
        k = k.replace("model.vision_model.embeddings.patch_embedding.", "vision_model.vision_tower.patch_embed.proj.")
        k = k.replace("model.vision_model.post_layernorm.", "vision_model.vision_tower.norm.")
        k = re.sub(r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection_layer\.", r"vision_model.vision_tower.blocks.\1.attn.proj.", k)
        k = re.sub(r"model\.vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"vision_model.vision_tower.blocks.\1.norm\2.", k)
        k = re.sub(r"model\.vision_model\.encoder\.layers\.(\d+)\.", r"vision_model.vision_tower.blocks.\1.", k)
        if k.startswith("model.vqmodel."):
            k = "gen_vision_model." + k[len("model.vqmodel.") :]
            k = k.replace(".decoder.up.", ".decoder.conv_blocks.").replace(".encoder.down.", ".encoder.conv_blocks.")
            k = k.replace(".block.", ".res.").replace(".mid.block_1.", ".mid.0.").replace(".mid.attn_1.", ".mid.1.")
            k = k.replace(".mid.block_2.", ".mid.2.")
        k = k.replace("model.generation_aligner.fc1.", "gen_aligner.layers.0.")
        k = k.replace("model.generation_aligner.hidden_layers.0.", "gen_aligner.layers.2.")
        k = k.replace("model.aligner.fc1.", "aligner.layers.0.").replace("model.aligner.hidden_layers.0.", "aligner.layers.2.")
        k = k.replace("model.generation_head.proj_out.", "gen_head.output_mlp_projector.")
        k = k.replace("model.generation_head.", "gen_head.").replace("model.generation_embeddings.", "gen_embed.")
        k = k.replace("model.language_model.", "language_model.model.")
        out[k] = value
    # extras DeepSeek checkpoints carry that transformers drops
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(4)
    out["vision_model.vision_tower.attn_pool.latent"] = torch.zeros(1, 1, 4)
    return out


def test_convert_deepseek_layout_round_trips_every_tensor(tmp_path, tiny_dir):
    original = load_file(tiny_dir / "model.safetensors")
    src = tmp_path / "deepseek"
    src.mkdir()
    deepseek = to_deepseek(original)
    assert not set(deepseek) & set(original) - {"lm_head.weight"}  # really renamed
    torch.save(deepseek, src / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(src)
    dst = tmp_path / "converted"
    assert main(["convert-deepseek", str(src), str(dst), "--config-from", str(tiny_dir)]) == 0

    converted = load_file(dst / "model.safetensors")
    assert set(converted) == set(original)
    for key, value in original.items():
        assert torch.equal(converted[key], value), key
    policy = JanusPolicy.from_pretrained(dst, local_files_only=True)  # model + processor load as any checkpoint
    assert policy.boi_id == AutoTokenizer.from_pretrained(tiny_dir).convert_tokens_to_ids("<begin_of_image>")


def test_unknown_deepseek_key_is_a_clear_error():
    assert convert_deepseek_key("gen_vision_model.decoder.conv_blocks.0.res.1.conv1.weight") == "model.vqmodel.decoder.up.0.block.1.conv1.weight"
    with pytest.raises(ExportError, match="unknown DeepSeek Janus key 'foo.bar'"):
        convert_deepseek_key("foo.bar")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no such checkpoint"):
        main([str(tmp_path / "nope.ckpt"), str(tmp_path / "out"), "--base", str(tmp_path)])


class _RunsCode:
    """Unpickling this would call ``exec`` (a hostile checkpoint index)."""

    def __reduce__(self):
        return (exec, ("import sys; sys.modules['t2ir1'].PWNED = True",))


def test_distributed_checkpoint_index_is_read_without_running_code(tmp_path):
    import pickle

    import t2ir1
    from t2ir1.export import policy_state_from_checkpoint

    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ExportError, match="builtins.exec.*nothing was executed"):
        policy_state_from_checkpoint(folder)
    assert not hasattr(t2ir1, "PWNED")


def test_a_directory_that_is_no_distributed_checkpoint_is_a_clear_error(tmp_path):
    from t2ir1.export import policy_state_from_checkpoint

    with pytest.raises(ExportError, match=r"not a distributed checkpoint \(no .metadata\)"):
        policy_state_from_checkpoint(tmp_path)
