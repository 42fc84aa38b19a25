"""Prompt construction for the two levels of BiCoT (REFERENCE §2.1-2.2).

Semantic level:  "{SYSTEM}\n\n<|User|>: {reasoning_prompt.format(prompt)}\n\n<|Assistant|>:"
Token level:     "<|User|>: {prompt}. {cot}\n\n<|Assistant|>:" + "<begin_of_image>"
BOS is added by the tokenizer in both cases.
"""

from __future__ import annotations

from pathlib import Path

SYSTEM_PROMPT = (
    "You are a helpful assistant that receives an image prompt and generate a visualization of the prompt."
)

# t2ir1's own wording of the reasoning instruction; `policy.reasoning_prompt` may point at
# another file, e.g. the original T2I-R1 text in ../shared/data/t2i-r1/reasoning_prompt.txt.
DEFAULT_REASONING_PROMPT = (
    'Describe how an image for the prompt "{}" should look before it is drawn. '
    "In 50 words or fewer, mention every object in the prompt, give each one its stated "
    "colour, count, shape or texture, and say where the objects are relative to each other. "
    "Add nothing the prompt does not ask for. Reply with the description only."
)


class PromptTemplateError(ValueError):
    """A reasoning prompt that cannot be formatted with the user's prompt."""


def load_reasoning_prompt(text_or_path: str | None) -> str:
    """Return the reasoning template: the default, literal text, or the contents of a file.

    A template must contain exactly one ``{}`` where the image prompt goes.
    """
    if text_or_path is None or text_or_path == "default":
        template = DEFAULT_REASONING_PROMPT
        source = "the default reasoning prompt"
    else:
        candidate = Path(text_or_path).expanduser()
        try:  # literal text longer than the OS allows for a file name is text, not a path
            is_file = "\n" not in text_or_path and "{}" not in text_or_path and candidate.is_file()
        except OSError:
            is_file = False
        template = candidate.read_text(encoding="utf-8").rstrip("\n") if is_file else text_or_path
        source = str(candidate) if is_file else "policy.reasoning_prompt"
    if template.count("{}") != 1:
        raise PromptTemplateError(
            f"{source} must contain exactly one '{{}}' placeholder for the image prompt "
            f"(found {template.count('{}')}). Edit the text or point policy.reasoning_prompt at another file."
        )
    return template


def semantic_prompt(prompt: str, reasoning_template: str, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The text the policy continues with its semantic-level CoT (no BOS: the tokenizer adds it)."""
    return f"{system_prompt}\n\n<|User|>: {reasoning_template.format(prompt)}\n\n<|Assistant|>:"


def image_prompt(prompt: str, cot: str | None) -> str:
    """The text before ``<begin_of_image>``; ``cot=None`` gives the no-reasoning baseline."""
    user = prompt if cot is None else f"{prompt}. {cot.strip()}"
    return f"<|User|>: {user}\n\n<|Assistant|>:"
