"""GIT VQA reward (REFERENCE §3, ``git``): does the image answer "yes" to each phrase?

For each phrase of a record (``attr_nouns``, else ``nouns``) the question is
``"{phrase}?"``, tokenised without special tokens and with the CLS token put first
(GIT's VQA format). The score of a phrase is ``P(yes) / (P(yes) + P(no))`` at the
next token, i.e. ``sigmoid(logit_yes - logit_no)``; a record scores the mean over
its phrases. Rows of task type ``spatial`` or ``numeracy`` score 0 (the original
leaves them to the detector); rows without phrases score 1.

All questions of a micro-batch of images go through ONE forward pass: the
(image, question) pairs are flattened, questions right-padded, and the logits read
at each question's last real token. The image encoder runs once per image; a
forward hook on the visual projection repeats each image's features for its
questions.

Images are preprocessed as batched tensor ops (``_common``) following the CLIP
image processor GIT ships with (resize the shortest edge, bicubic; centre crop;
rescale; normalise); a processor configured otherwise is called as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards._common import (
    check_inputs,
    normalise,
    resize_bicubic,
    single_token_ids,
    uint8_groups,
)
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.frozen import FrozenModel

log = logging.getLogger(__name__)

PIL_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as image processors store ``resample``


def resize_shortest_and_crop(
    images: Sequence[Image.Image], shortest_edge: int, crop_height: int, crop_width: int
) -> torch.Tensor:
    """uint8 ``[B, 3, crop_height, crop_width]``: shortest edge resized to ``shortest_edge`` (bicubic), centre crop.

    The output size rule and crop offsets are those of transformers' CLIP image
    processor (long side ``int(shortest_edge * long / short)``, offsets rounded down).
    Requires ``crop_height, crop_width <= shortest_edge``.
    """
    out = torch.empty((len(images), 3, crop_height, crop_width), dtype=torch.uint8)  # [B, 3, Hc, Wc]
    for indices, pixels in uint8_groups(images):  # pixels: [G, 3, H, W]
        height, width = pixels.shape[-2:]
        if width <= height:
            new_height, new_width = int(shortest_edge * height / width), shortest_edge
        else:
            new_height, new_width = shortest_edge, int(shortest_edge * width / height)
        resized = resize_bicubic(pixels, new_height, new_width)  # [G, 3, h, w]
        top, left = (new_height - crop_height) // 2, (new_width - crop_width) // 2
        out[indices] = resized[:, :, top : top + crop_height, left : left + crop_width]
    return out


class GitVQAReward(FrozenModel):
    """GIT-large-VQAv2 yes-probability per phrase, averaged; ``[B]`` float32 in ``[0, 1]``.

    Args:
        model_path: hub id or local folder with a ``GitForCausalLM`` and its processor.
        question_template: question per phrase (``{phrase}`` is replaced).
        yes_token, no_token: answer tokens compared at the next position.
        zero_task_types: task types that score 0 (left to the detector).
        dtype, micro_batch_size (images per forward pass), local_files_only: loading knobs.
    """

    def __init__(
        self,
        model_path: str = "microsoft/git-large-vqav2",
        question_template: str = "{phrase}?",
        yes_token: str = "yes",
        no_token: str = "no",
        zero_task_types: Sequence[str] = ("spatial", "numeracy"),
        dtype: str = "auto",
        micro_batch_size: int = 16,
        local_files_only: bool = False,
        name: str = "git",
    ) -> None:
        super().__init__(name, model_path, dtype, micro_batch_size, local_files_only)
        self.question_template = question_template
        self.yes_token, self.no_token = yes_token, no_token
        self.zero_task_types = tuple(zero_task_types)

    model_class = "GitForCausalLM"

    def on_load(self) -> None:
        tokenizer = self.processor.tokenizer
        self.answer_ids = single_token_ids(tokenizer, (self.yes_token, self.no_token), self.name, self.model_path)
        self._tensor_preprocessing = self._clip_settings(self.processor.image_processor)
        if tokenizer.cls_token_id is None:
            raise ValueError(f"{self.name}: the tokenizer of {self.model_path} has no CLS token")

    def _clip_settings(self, image_processor) -> dict | None:
        """The processor's settings when it is the usual CLIP pipeline the tensor path reproduces, else None."""
        settings = {name: getattr(image_processor, name, None) for name in ("size", "crop_size")}
        size, crop = settings["size"], settings["crop_size"]
        shortest = size.get("shortest_edge") if size is not None else None
        usual = (
            shortest is not None
            and size.get("longest_edge") is None
            and getattr(image_processor, "do_resize", False)
            and getattr(image_processor, "resample", None) == PIL_BICUBIC
            and getattr(image_processor, "do_center_crop", False)
            and crop is not None
            and crop.get("height") is not None
            and max(crop["height"], crop["width"]) <= shortest
            and getattr(image_processor, "do_rescale", False)
            and abs(image_processor.rescale_factor - 1 / 255) < 1e-12
            and getattr(image_processor, "do_normalize", False)
            and not getattr(image_processor, "do_pad", False)
        )
        if not usual:
            log.info("%s: image processor is not resize+crop CLIP; preprocessing through it", self.name)
            return None
        return {
            "shortest_edge": int(shortest),
            "crop_height": int(crop["height"]),
            "crop_width": int(crop["width"]),
            "mean": torch.tensor(list(image_processor.image_mean), dtype=torch.float32).view(1, 3, 1, 1),
            "std": torch.tensor(list(image_processor.image_std), dtype=torch.float32).view(1, 3, 1, 1),
        }

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, 3, Hc, Wc]`` float32 pixel values for GIT's image encoder."""
        settings = self._tensor_preprocessing
        if settings is None:
            return self.processor.image_processor(
                [img.convert("RGB") for img in images], return_tensors="pt"
            ).pixel_values
        pixels = resize_shortest_and_crop(
            images, settings["shortest_edge"], settings["crop_height"], settings["crop_width"]
        )  # uint8 [B, 3, Hc, Wc]
        return normalise(pixels, settings["mean"], settings["std"])

    def phrases(self, record: PromptRecord) -> tuple[str, ...]:
        """The phrases asked about: ``attr_nouns`` when present, else ``nouns``."""
        return record.attr_nouns or record.nouns

    def question_ids(self, phrase: str) -> list[int]:
        """``[CLS] + tokens("{phrase}?")`` with no other special tokens."""
        tokenizer = self.processor.tokenizer
        text = self.question_template.format(phrase=phrase)
        return [tokenizer.cls_token_id, *tokenizer(text, add_special_tokens=False).input_ids]

    @contextmanager
    def _features_per_question(self, image_of_pair: torch.Tensor):
        """Repeat the projected image features ``[U, N, D]`` to ``[P, N, D]``, one row per question."""

        def expand(_module, _inputs, output):
            return output.index_select(0, image_of_pair)

        handle = self.model.git.visual_projection.register_forward_hook(expand)
        try:
            yield
        finally:
            handle.remove()

    @torch.inference_mode()
    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against the phrases of ``records[i]``; returns ``[B]`` float32 on CPU."""
        self.ready()
        check_inputs(self.name, records, images)
        scores = torch.ones(len(records), dtype=torch.float32)
        asked = [
            i for i, r in enumerate(records) if r.task_type not in self.zero_task_types and self.phrases(r)
        ]
        for i, record in enumerate(records):
            if record.task_type in self.zero_task_types:
                scores[i] = 0.0
        pad_id = self.processor.tokenizer.pad_token_id or 0
        for chunk in self.chunks(len(asked)):
            rows = asked[chunk]
            pixel_values = self.preprocess([images[i] for i in rows]).to(
                self.device, self.dtype
            )  # [U, 3, H, W]
            questions: list[list[int]] = []
            image_of_pair: list[int] = []
            for local, row in enumerate(rows):
                for phrase in self.phrases(records[row]):
                    questions.append(self.question_ids(phrase))
                    image_of_pair.append(local)
            lengths = torch.tensor([len(q) for q in questions])  # [P]
            input_ids = torch.full((len(questions), int(lengths.max())), pad_id, dtype=torch.long)  # [P, T]
            for p, question in enumerate(questions):
                input_ids[p, : len(question)] = torch.tensor(question)
            attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # [P, T]
            pair_index = torch.tensor(image_of_pair, device=self.device)
            with self._features_per_question(pair_index):
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    pixel_values=pixel_values,
                ).logits  # [P, N_img + T, V]
            text_start = logits.shape[1] - input_ids.shape[1]
            last = (text_start + lengths - 1).to(self.device)  # [P] position of each question's last token
            next_token = logits[torch.arange(len(questions), device=self.device), last]  # [P, V]
            yes_no = next_token[:, self.answer_ids].float()  # [P, 2]
            phrase_scores = torch.softmax(yes_no, dim=-1)[:, 0].cpu()  # [P] P(yes) / (P(yes) + P(no))
            totals = torch.zeros(len(rows)).index_add_(0, pair_index.cpu(), phrase_scores)  # [U]
            counts = torch.zeros(len(rows)).index_add_(0, pair_index.cpu(), torch.ones(len(questions)))  # [U]
            scores[rows] = totals / counts
        return RewardOutput(self.name, scores)
