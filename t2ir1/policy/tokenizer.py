"""A small byte-level BPE tokenizer with Janus-Pro's special tokens and chat template.

Real Janus-Pro checkpoints ship their own tokenizer; this one exists so that a tiny,
randomly initialised (or ShapeWorld-pretrained) Janus can be built offline and loaded
back through ``JanusProcessor.from_pretrained`` exactly like a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Janus-Pro (DeepSeek-LLM) special tokens, spelled as in the released tokenizer.
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"
IMAGE_TOKEN = "<image_placeholder>"
BOI_TOKEN = "<begin_of_image>"
EOI_TOKEN = "<end_of_image>"
# Role markers are ordinary text in DeepSeek's format; kept whole here so prompts stay short.
ROLE_TOKENS = ("<|User|>", "<|Assistant|>")

SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN, BOI_TOKEN, EOI_TOKEN)

# DeepSeek chat format used by Janus: "{system}\n\n<|User|>: {user}\n\n<|Assistant|>:{assistant}"
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|User|>: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- elif part['type'] == 'image' -%}{{ '<image_placeholder>' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|Assistant|>: ' + message['content'] + '"
    + EOS_TOKEN
    + "\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|>:' }}{%- endif -%}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``corpus`` and wrap it with Janus's special tokens.

    The tokenizer adds BOS to every sequence (as DeepSeek's does) and pads on the left.
    Byte-level pre-tokenization means any text encodes, words outside the corpus just cost
    more tokens.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS) + list(ROLE_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    bos_id = core.token_to_id(BOS_TOKEN)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN},
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
