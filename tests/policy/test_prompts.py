import pytest

from t2ir1.policy.prompts import (
    DEFAULT_REASONING_PROMPT,
    SYSTEM_PROMPT,
    PromptTemplateError,
    image_prompt,
    load_reasoning_prompt,
    semantic_prompt,
)


def test_semantic_prompt_has_the_deepseek_chat_layout():
    text = semantic_prompt("a cat", "Think about {} now.")
    assert text == f"{SYSTEM_PROMPT}\n\n<|User|>: Think about a cat now.\n\n<|Assistant|>:"


def test_image_prompt_with_and_without_cot():
    assert image_prompt("a cat", " It sits. ") == "<|User|>: a cat. It sits.\n\n<|Assistant|>:"
    assert image_prompt("a cat", None) == "<|User|>: a cat\n\n<|Assistant|>:"


def test_reasoning_prompt_sources(tmp_path):
    assert load_reasoning_prompt("default") == DEFAULT_REASONING_PROMPT
    path = tmp_path / "r.txt"
    path.write_text("Picture {} in words.\n")
    assert load_reasoning_prompt(str(path)) == "Picture {} in words."
    assert load_reasoning_prompt("Literal {} text") == "Literal {} text"
    with pytest.raises(PromptTemplateError, match="exactly one"):
        load_reasoning_prompt("no placeholder")


def test_the_original_reasoning_prompt_file_loads(shared_dir):
    template = load_reasoning_prompt(str(shared_dir / "data/t2i-r1/reasoning_prompt.txt"))
    assert "50 words" in template and template.count("{}") == 1
