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


def test_image_prompt_keeps_the_cots_leading_space_under_the_quirk():
    # the original formats f"{raw_prompt}. {answer}" with the decoded answer unstripped (grpo_trainer.py:545)
    assert image_prompt("a cat", " It sits.", strip_cot=False) == "<|User|>: a cat.  It sits.\n\n<|Assistant|>:"
    assert image_prompt("a cat", " It sits.") == "<|User|>: a cat. It sits.\n\n<|Assistant|>:"


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


def test_the_shipped_original_prompt_is_stripped():
    """The shipped copy needs no ../shared (test_the_shipped_copy_is_the_original_file checks its bytes)."""
    template = load_reasoning_prompt("t2i_r1")
    assert template.startswith('You are asked to generate an image based on this prompt: "{}"\n')
    assert template.endswith("Output your visualization directly without explanation: ")  # trailing space kept
    text = semantic_prompt("a cat", template)
    # the message is stripped as the original does: no trailing space before the assistant turn
    assert text.endswith('Do not miss objects. Output your visualization directly without explanation:\n\n<|Assistant|>:')
    assert text.startswith(f'{SYSTEM_PROMPT}\n\n<|User|>: You are asked to generate an image based on this prompt: "a cat"\n')
    # leading/trailing whitespace of a literal template goes too
    assert semantic_prompt("a cat", "  Think about {} now.  ") == semantic_prompt("a cat", "Think about {} now.")


def test_the_shipped_copy_is_the_original_file(shared_dir):
    from t2ir1.policy.prompts import NAMED_REASONING_PROMPTS

    original = shared_dir / "data/t2i-r1/reasoning_prompt.txt"
    assert NAMED_REASONING_PROMPTS["t2i_r1"].read_bytes() == original.read_bytes()


def test_a_long_literal_template_is_text_not_a_path():
    long_template = "Describe {} " + "in great detail " * 30  # > 255 characters: not a valid file name
    assert load_reasoning_prompt(long_template) == long_template
