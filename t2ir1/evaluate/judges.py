"""Frozen judge models shared by the harnesses: CLIP, BLIP-VQA, and an open-vocabulary detector.

All load in ``setup(device)`` from a hub id or a local folder through transformers'
``from_pretrained`` (never at import), run under ``inference_mode``, and return CPU tensors.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import torch
from PIL import Image

from t2ir1.evaluate.provenance import model_provenance
from t2ir1.rewards._common import (
    micro_batches,
    not_setup_error,
    single_token_ids,
)
from t2ir1.rewards.compositional import Detection
from t2ir1.rewards.frozen import FrozenModel

log = logging.getLogger(__name__)


class ClipJudge(FrozenModel):
    """CLIP image/text embeddings: CLIPScore (cosine) and zero-shot classification.

    Args:
        model_path: hub id or folder of a ``CLIPModel`` + processor (T2I-CompBench: ViT-B/32,
            GenEval's colour classifier: ViT-L/14, both OpenAI weights).
        dtype, micro_batch_size, local_files_only: loading knobs.
    """

    def __init__(
        self, model_path: str, dtype: str = "auto", micro_batch_size: int = 32, local_files_only: bool = False
    ):
        super().__init__("clip", model_path, dtype, micro_batch_size, local_files_only)

    model_class = "CLIPModel"

    def describe(self) -> dict:
        return model_provenance(self.model_path, kind="clip", dtype=self.dtype_name)

    @torch.inference_mode()
    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]`` float32 on CPU."""
        self.ready()
        pieces = []
        for chunk in self.chunks(len(images)):
            pixels = self.processor.image_processor(
                [im.convert("RGB") for im in images[chunk]], return_tensors="pt"
            )
            features = self.model.get_image_features(
                pixel_values=pixels["pixel_values"].to(self.device, self.dtype)
            )
            features = getattr(features, "pooler_output", features)  # [n, D]
            pieces.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(pieces) if pieces else torch.zeros(0, 0)

    @torch.inference_mode()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[M, D]`` float32 on CPU (truncated to the model's context)."""
        self.ready()
        max_length = self.model.config.text_config.max_position_embeddings
        pieces = []
        for chunk in self.chunks(len(texts)):
            tokens = self.processor.tokenizer(
                list(texts[chunk]), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
            features = getattr(features, "pooler_output", features)  # [m, D]
            pieces.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(pieces)

    def cosine(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """CLIPScore as T2I-CompBench computes it: cosine of image i and text i, ``[N]`` (no 100x, no clipping)."""
        return (self.image_features(images) * self.text_features(texts)).sum(dim=-1)

    def zero_shot_classifier(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """``[D, C]``: per class, the renormalised mean of its normalised template embeddings."""
        columns = []
        for classname in classnames:
            embeddings = self.text_features([t.format(c=classname) for t in templates])  # [T, D]
            columns.append(torch.nn.functional.normalize(embeddings.mean(dim=0), dim=-1))
        return torch.stack(columns, dim=1)

    def classify(self, images: Sequence[Image.Image], classifier: torch.Tensor) -> list[int]:
        """Index of the best class (argmax of image @ classifier) per image."""
        if not images:
            return []
        return (self.image_features(images) @ classifier).argmax(dim=-1).tolist()


class BlipVqaJudge(FrozenModel):
    """BLIP VQA yes-probability: ``P(yes) / (P(yes) + P(no))`` of the first answer token.

    The question ``"{phrase}?"`` is encoded against the image by BLIP's text encoder; the
    answer decoder reads it from its start token and the logits of "yes" and "no" at the
    first position are compared (BLIP's ranking mode with the two candidates, which are one
    token each).

    Args:
        model_path: hub id or folder of a ``BlipForQuestionAnswering`` + processor
            (T2I-CompBench: BLIP VQA, ``Salesforce/blip-vqa-base``).
    """

    def __init__(
        self,
        model_path: str,
        yes_token: str = "yes",
        no_token: str = "no",
        dtype: str = "auto",
        micro_batch_size: int = 32,
        local_files_only: bool = False,
    ):
        super().__init__("blip", model_path, dtype, micro_batch_size, local_files_only)
        self.yes_token, self.no_token = yes_token, no_token

    model_class = "BlipForQuestionAnswering"

    def on_load(self) -> None:
        tokenizer = self.processor.tokenizer
        self.answer_ids = single_token_ids(
            tokenizer, (self.yes_token, self.no_token), "blip", self.model_path
        )

    def describe(self) -> dict:
        return model_provenance(self.model_path, kind="blip_vqa", dtype=self.dtype_name)

    @torch.inference_mode()
    def yes_probability(self, images: Sequence[Image.Image], questions: Sequence[str]) -> torch.Tensor:
        """``[P]`` float32: P(yes) / (P(yes) + P(no)) for (images[p], questions[p]).

        Questions are batched only with questions of the same token length: BLIP's padded
        rows do not score exactly like unpadded ones, and a score must not depend on which
        other questions share its batch.
        """
        self.ready()
        token_ids = self.processor.tokenizer(list(questions)).input_ids
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, ids in enumerate(token_ids):
            by_length[len(ids)].append(index)
        result = torch.zeros(len(questions))
        for rows in by_length.values():
            for chunk in self.chunks(len(rows)):
                part = rows[chunk]
                result[part] = self._yes_probability([images[i] for i in part], [token_ids[i] for i in part])
        return result

    def _yes_probability(self, images: Sequence[Image.Image], token_ids: Sequence[list[int]]) -> torch.Tensor:
        model = self.model
        pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
        input_ids = torch.tensor(token_ids, device=self.device)  # [n, T], equal lengths
        image_embeds = model.vision_model(pixel_values=pixels["pixel_values"].to(self.device, self.dtype))[
            0
        ]  # [n, N, D]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question_embeds = model.text_encoder(
            input_ids=input_ids, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask
        )[0]  # [n, T, D]
        question_mask = torch.ones(question_embeds.shape[:-1], dtype=torch.long, device=self.device)
        start = torch.full((question_embeds.shape[0], 1), model.decoder_start_token_id, device=self.device)
        logits = model.text_decoder(
            input_ids=start, encoder_hidden_states=question_embeds, encoder_attention_mask=question_mask
        ).logits[:, -1]  # [n, V]
        return torch.softmax(logits[:, self.answer_ids].float(), dim=-1)[:, 0].cpu()  # [n]


class GroundingDetector:
    """Open-vocabulary detection of named classes with the project's GroundingDINO member.

    Wraps :meth:`t2ir1.rewards.gdino.GroundingDinoReward.detect` (caption ``"a . b."``,
    phrase logit per class, pixel boxes), grouping images by size and micro-batching.

    Args:
        model_path: hub id or folder of a ``GroundingDinoForObjectDetection`` + processor.
        box_threshold: keep a (box, class) pair whose phrase logit exceeds this.
    """

    def __init__(
        self,
        model_path: str = "IDEA-Research/grounding-dino-tiny",
        box_threshold: float = 0.3,
        dtype: str = "auto",
        micro_batch_size: int = 8,
        local_files_only: bool = False,
    ):
        from t2ir1.rewards.gdino import GroundingDinoReward

        self.member = GroundingDinoReward(
            model_path=model_path,
            box_threshold=box_threshold,
            dtype=dtype,
            micro_batch_size=micro_batch_size,
            local_files_only=local_files_only,
            name="detector",
        )
        self.micro_batch_size = micro_batch_size
        self.ready = False

    def setup(self, device: str = "cpu") -> None:
        if not self.ready:
            self.member.setup(device)
            self.ready = True

    def describe(self) -> dict:
        return model_provenance(
            self.member.model_path, kind="grounding_dino", box_threshold=self.member.box_threshold
        )

    def detect(
        self, classes_per_image: Sequence[Sequence[str]], images: Sequence[Image.Image]
    ) -> list[list[Detection]]:
        """Per image, the detections of its classes (label = class name), by decreasing score."""
        if not self.ready:
            raise not_setup_error("detector")
        results: list[list[Detection]] = [[] for _ in images]
        asked = [i for i, classes in enumerate(classes_per_image) if classes]
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in asked:
            by_size[images[i].size].append(i)
        for rows in by_size.values():
            for chunk in micro_batches(len(rows), self.micro_batch_size):
                part = rows[chunk]
                found = self.member.detect(
                    [list(classes_per_image[i]) for i in part], [images[i] for i in part]
                )
                for i, detections in zip(part, found, strict=True):
                    results[i] = sorted(detections, key=lambda d: -d.score)
        return results


def crop_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The pixels inside ``(x_min, y_min, x_max, y_max)``, clamped to the image, at least 1x1."""
    width, height = image.size
    x0 = min(max(int(round(box[0])), 0), width - 1)
    y0 = min(max(int(round(box[1])), 0), height - 1)
    x1 = min(max(int(round(box[2])), x0 + 1), width)
    y1 = min(max(int(round(box[3])), y0 + 1), height)
    return image.crop((x0, y0, x1, y1))


def mask_box(mask: torch.Tensor) -> tuple[float, float, float, float] | None:
    """``(x_min, y_min, x_max, y_max)`` of a boolean ``[H, W]`` mask (pixel edges, max exclusive); None when empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max()) + 1.0, float(ys.max()) + 1.0)


def masked_crop(
    image: Image.Image, box: tuple[float, float, float, float], mask: torch.Tensor | None, grey: int = 128
) -> Image.Image:
    """The box crop with the pixels outside the object's mask painted grey (GenEval's colour input).

    Without a mask it is the plain box crop.
    """
    crop = crop_box(image, box)
    if mask is None:
        return crop
    width, height = image.size
    x0 = min(max(int(round(box[0])), 0), width - 1)
    y0 = min(max(int(round(box[1])), 0), height - 1)
    inside = mask[y0 : y0 + crop.height, x0 : x0 + crop.width].to(torch.uint8).mul(255).numpy()
    background = Image.new("RGB", crop.size, (grey, grey, grey))
    return Image.composite(crop.convert("RGB"), background, Image.fromarray(inside, mode="L"))


class Mask2FormerDetector(FrozenModel):
    """Closed-set COCO instance segmentation with transformers' Mask2Former (GenEval's model family).

    Detections carry their boolean mask in ``attributes["mask"]``; the box is the mask's extent.
    Labels come from the checkpoint's ``id2label`` (``label_aliases`` renames them to the
    benchmark's class names where the two spell a class differently).

    Args:
        model_path: hub id or folder of a ``Mask2FormerForUniversalSegmentation`` + image processor
            (GenEval's detector is mmdetection's Mask2Former Swin-S; the closest transformers
            checkpoint is ``facebook/mask2former-swin-small-coco-instance``, with other weights).
        score_floor: instances below this score are dropped before the benchmark's thresholds.
    """

    def __init__(
        self,
        model_path: str = "facebook/mask2former-swin-small-coco-instance",
        score_floor: float = 0.0,
        label_aliases: dict[str, str] | None = None,
        dtype: str = "auto",
        micro_batch_size: int = 4,
        local_files_only: bool = False,
    ):
        super().__init__("mask2former", model_path, dtype, micro_batch_size, local_files_only)
        self.score_floor = score_floor
        self.label_aliases = dict(label_aliases or {})

    model_class = "Mask2FormerForUniversalSegmentation"

    def on_load(self) -> None:
        self.id2label = {int(k): self.label_aliases.get(v, v) for k, v in self.model.config.id2label.items()}

    def describe(self) -> dict:
        return model_provenance(
            self.model_path, kind="mask2former", dtype=self.dtype_name, label_aliases=self.label_aliases
        )

    def instances(
        self, segmentation: torch.Tensor, segments: Sequence[dict], classes: Sequence[str]
    ) -> list[Detection]:
        """Detections of the wanted ``classes`` from one post-processed image.

        ``segmentation``: ``[H, W]`` segment ids (-1 = none); ``segments``: ``{id, label_id, score}``.
        """
        wanted = set(classes)
        found = []
        for segment in segments:
            label = self.id2label.get(int(segment["label_id"]))
            if label not in wanted or float(segment["score"]) < self.score_floor:
                continue
            mask = segmentation == int(segment["id"])
            box = mask_box(mask)
            if box is not None:
                found.append(Detection(label, box, float(segment["score"]), {"mask": mask}))
        return sorted(found, key=lambda d: -d.score)

    @torch.inference_mode()
    def detect(
        self, classes_per_image: Sequence[Sequence[str]], images: Sequence[Image.Image]
    ) -> list[list[Detection]]:
        """Per image, the instances of its classes (label = class name), by decreasing score."""
        self.ready()
        results: list[list[Detection]] = [[] for _ in images]
        for chunk in self.chunks(len(images)):
            batch = [im.convert("RGB") for im in images[chunk]]
            inputs = self.processor(images=batch, return_tensors="pt")
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype))
            processed = self.processor.post_process_instance_segmentation(
                outputs, threshold=self.score_floor, target_sizes=[(im.height, im.width) for im in batch]
            )
            for offset, result in enumerate(processed):
                index = chunk.start + offset
                if result.get("segmentation") is None or not result.get("segments_info"):
                    continue
                results[index] = self.instances(
                    result["segmentation"].cpu(), result["segments_info"], classes_per_image[index]
                )
        return results
