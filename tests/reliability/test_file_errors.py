"""Every file error names the file and says what to do (never torch's advice to set weights_only=False)."""

from __future__ import annotations

import shutil

import pytest
import torch

from t2ir1.data.records import PromptRecord, RecordError, limit_prompt_tokens
from t2ir1.data.t2i_r1 import load_t2i_r1_jsonl
from t2ir1.export import ExportError, load_policy_weights
from t2ir1.export import main as export_main
from t2ir1.generate import PromptSourceError, read_prompts
from t2ir1.policy.janus import CheckpointError, JanusPolicy
from t2ir1.policy.tiny import load_tiny_policy
from t2ir1.train import run as train
from tests.workflow_runs import compose_train

ROW = '{"prompt": "a red cube", "task_type": "color", "nouns": ["cube"]}\n'


def _no_torch_advice(message: str) -> bool:
    return "weights_only=False" not in message and "weights_only` set to `False" not in message


@pytest.fixture()
def policy_ckpt(tmp_path):
    """A checkpoint in train.py's layout, holding the tiny policy's weights (as a run writes them)."""
    policy = load_tiny_policy(tmp_path / "models")
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"policy.model.{k}": v for k, v in policy.model.state_dict().items()}}, path)
    return path


def test_truncated_training_checkpoint(tmp_path, policy_ckpt, tiny_dir):
    data = policy_ckpt.read_bytes()
    policy_ckpt.write_bytes(data[: len(data) // 3])
    with pytest.raises(ExportError) as info:
        export_main([str(policy_ckpt), str(tmp_path / "out"), "--base", str(tiny_dir)])
    assert str(policy_ckpt) in str(info.value) and "corrupt, truncated" in str(info.value)
    assert _no_torch_advice(str(info.value))


def test_directory_passed_as_checkpoint(tmp_path, tiny_dir):
    with pytest.raises(ExportError, match=r"is a directory but not a distributed checkpoint .*last.ckpt"):
        export_main([str(tmp_path), str(tmp_path / "out"), "--base", str(tiny_dir)])


def test_checkpoint_of_another_model_size(tmp_path, policy_ckpt):
    other = load_tiny_policy(tmp_path / "models", spec={"hidden_size": 32, "intermediate_size": 64})
    with pytest.raises(ExportError) as info:
        load_policy_weights(other, policy_ckpt)
    assert str(policy_ckpt) in str(info.value) and "of another shape" in str(info.value)
    assert "Use the model config the run was trained with" in str(info.value)


def test_training_resume_from_a_checkpoint_of_another_model_size(tmp_path, policy_ckpt, tiny_dir):
    # a real training checkpoint of the default tiny model, resumed with a narrower one
    run_dir = tmp_path / "run"
    base = ("logger=csv", "algo.group_size=2", "algo.max_new_tokens=4", "data.batch_size=1", "trainer.max_steps=1")
    train(compose_train(run_dir, *base, f"model.cache_dir={tiny_dir.parent}"))
    last = run_dir / "checkpoints" / "last.ckpt"
    narrower = compose_train(tmp_path / "run2", *base, f"model.cache_dir={tmp_path / 'models'}",
                             "model.spec.hidden_size=32", "model.spec.intermediate_size=64", f"ckpt_path={last}")
    with pytest.raises(RuntimeError) as info:
        train(narrower)
    assert f"ckpt_path={last} does not fit this model" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_weights(tmp_path, tiny_dir, damage):
    broken = tmp_path / "janus"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)
    with pytest.raises(CheckpointError) as info:
        JanusPolicy.from_pretrained(broken, local_files_only=True)
    assert str(broken) in str(info.value) and "corrupt, truncated" in str(info.value)


def test_non_utf8_prompt_file_for_generate(tmp_path):
    path = tmp_path / "prompts.txt"
    # "a red cube\n" is bytes 0-10, "caf" 11-13: the latin-1 e-acute is byte 14, on line 2
    path.write_bytes(b"a red cube\ncaf\xe9 table\n")
    with pytest.raises(PromptSourceError, match=r"prompts.txt:2: not UTF-8 \(byte 0xe9 at offset 14\)"):
        read_prompts(str(path))


def test_non_utf8_training_data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(ROW.encode() + ROW.encode() + b'{"prompt": "caf\xe9", "task_type": "color", "nouns": []}\n')
    with pytest.raises(RecordError, match=r"data.jsonl:3: not UTF-8"):
        load_t2i_r1_jsonl(path)


# ----------------------------------------------------------------------------- prompts past the context
def _tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


def test_long_prompt_rule_by_hand():
    # a whitespace "tokenizer": token count = word count
    records = [PromptRecord("a b c", "color", origin="f.jsonl:1"), PromptRecord("a b c d e", "color", origin="f.jsonl:2")]
    words = str.split
    with pytest.raises(RecordError, match=r"^f.jsonl:2: the prompt is 5 tokens \(9 characters\), more than data.max_prompt_tokens=3"):
        limit_prompt_tokens(records, 3, words)
    assert [r.prompt for r in limit_prompt_tokens(records, 3, words, rule="drop")] == ["a b c"]
    assert [r.prompt for r in limit_prompt_tokens(records, 3, words, " ".join, rule="truncate")] == ["a b c", "a b c"]
    assert limit_prompt_tokens(records, None, words) == records


def test_a_20000_character_prompt_is_refused_at_load_time_naming_file_and_line(tmp_path, tiny_dir):
    data = tmp_path / "prompts.jsonl"
    long_row = '{"prompt": "' + "a red cube " * 1818 + 'xx", "task_type": "color", "nouns": ["cube"]}\n'  # 20,000 chars
    data.write_text(ROW + long_row)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path / "run", "logger=csv", "data=t2i_r1", f"data.source.path={data}",
                        f"model.cache_dir={tiny_dir.parent}", "trainer.max_steps=1")
    with pytest.raises(RecordError, match=rf"{data}:2: the prompt is \d+ tokens \(20000 characters\), more than data.max_prompt_tokens=512"):
        train(cfg)
    assert not last.exists()  # nothing was trained: no crash checkpoint either
    # truncate: the long prompt is cut to 512 of the policy's tokens and training goes on
    records = load_t2i_r1_jsonl(data)
    tokenizer = _tokenizer(tiny_dir)
    kept = limit_prompt_tokens(records, 512, lambda t: tokenizer.encode(t, add_special_tokens=False),
                               lambda ids: tokenizer.decode(ids, skip_special_tokens=True), "truncate")
    assert kept[0] == records[0] and len(tokenizer.encode(kept[1].prompt, add_special_tokens=False)) <= 512
