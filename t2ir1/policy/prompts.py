"""Prompt construction for the two levels of BiCoT (REFERENCE §2.1-2.2).

Semantic level:  "{SYSTEM}\n\n<|User|>: {reasoning_prompt.format(prompt).strip()}\n\n<|Assistant|>:"
                 (then stripped as a whole, as the original's ``apply_sft_template`` does)
Token level:     "<|User|>: {prompt}. {cot}\n\n<|Assistant|>:" + "<begin_of_image>"
                 (the CoT stripped; the original keeps its leading space: ``algo.prompt_quirks``)
BOS is added by the tokenizer in both cases.
"""

from __future__ import annotations

from pathlib import Path

SYSTEM_PROMPT = (
    "You are a helpful assistant that receives an image prompt and generate a visualization of the prompt."
)

# t2ir1's own wording of the reasoning instruction; `algo.reasoning_prompt` may name a shipped
# prompt (NAMED_REASONING_PROMPTS), give literal text or point at a file.
DEFAULT_REASONING_PROMPT = (
    'Describe how an image for the prompt "{}" should look before it is drawn. '
    "In 50 words or fewer, mention every object in the prompt, give each one its stated "
    "colour, count, shape or texture, and say where the objects are relative to each other. "
    "Add nothing the prompt does not ask for. Reply with the description only."
)


# Prompts shipped in t2ir1/policy/reasoning_prompts/, selectable by name.
REASONING_PROMPTS_DIR = Path(__file__).resolve().parent / "reasoning_prompts"
NAMED_REASONING_PROMPTS = {
    # the original T2I-R1 reasoning_prompt.txt, byte for byte (Apache-2.0; see NOTICE.md there)
    "t2i_r1": REASONING_PROMPTS_DIR / "t2i_r1.txt",
}


class PromptTemplateError(ValueError):
    """A reasoning prompt that cannot be formatted with the user's prompt."""


def load_reasoning_prompt(text_or_path: str | None) -> str:
    """Return the reasoning template: the default, a shipped one by name, literal text, or a file's text.

    ``"default"`` (or ``None``) is t2ir1's wording; ``"t2i_r1"`` the original's file
    (:data:`NAMED_REASONING_PROMPTS`). A template must contain exactly one ``{}`` where the
    image prompt goes.
    """
    if text_or_path is None or text_or_path == "default":
        template = DEFAULT_REASONING_PROMPT
        source = "the default reasoning prompt"
    elif text_or_path in NAMED_REASONING_PROMPTS:
        template = NAMED_REASONING_PROMPTS[text_or_path].read_text(encoding="utf-8")
        source = str(NAMED_REASONING_PROMPTS[text_or_path])
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
    """The text the policy continues with its semantic-level CoT (no BOS: the tokenizer adds it).

    The formatted message is stripped before the template and the whole text again, as the
    original does, so the original file's trailing space never reaches the tokenizer.
    """
    message = reasoning_template.format(prompt).strip()
    return f"{system_prompt}\n\n<|User|>: {message}\n\n<|Assistant|>:".strip()


def image_prompt(prompt: str, cot: str | None, strip_cot: bool = True) -> str:
    """The text before ``<begin_of_image>``; ``cot=None`` gives the no-reasoning baseline.

    ``strip_cot=False`` is the original's: the decoded completion goes in as it is, so its
    usual leading space gives ``". " + " A ..."`` (grpo_trainer.py:543-545).
    """
    user = prompt if cot is None else f"{prompt}. {cot.strip() if strip_cot else cot}"
    return f"<|User|>: {user}\n\n<|Assistant|>:"
