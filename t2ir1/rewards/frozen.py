"""One base for frozen transformers models: reward members (GIT, GroundingDINO) and the
evaluation judges (CLIP, BLIP-VQA, Mask2Former) share the same skeleton.

* ``setup(device)`` loads the processor and the model (``model_class`` of transformers) from
  ``model_path`` in ``dtype``, frozen (``eval()``, no gradients); never at import or in
  ``__init__``. A second call does nothing (idempotent: the ensemble, the harness and a
  resumed run may each call it).
* :meth:`ready` raises one clear error when a model is used before ``setup``.
* :meth:`chunks` yields the micro-batches of ``micro_batch_size`` items; callers run them
  under ``torch.inference_mode()`` (:meth:`score_images` does both for image scorers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards._common import check_inputs, load_frozen, micro_batches, not_setup_error

log = logging.getLogger(__name__)


class FrozenModel:
    """A frozen transformers checkpoint with its processor.

    Subclasses set ``model_class`` (the transformers class name) and may override
    :meth:`on_load` for what depends on the loaded weights (answer token ids, label names).

    Args:
        name: who this is, in messages and logs (the reward member's key, ``clip`` ...).
        model_path: hub id or local folder of the checkpoint.
        dtype: ``auto`` (bfloat16 on CUDA, float32 elsewhere) or a name of ``t2ir1.dtypes.DTYPES``.
        micro_batch_size: items per forward pass.
        local_files_only: never reach the hub.
    """

    model_class: str = ""

    def __init__(self, name: str, model_path: str, dtype: str = "auto", micro_batch_size: int = 16, local_files_only: bool = False):
        if micro_batch_size < 1:
            raise ValueError(f"{name}: micro_batch_size must be >= 1, got {micro_batch_size}")
        self.name = name
        self.model_path = model_path
        self.dtype_name = dtype
        self.micro_batch_size = micro_batch_size
        self.local_files_only = local_files_only
        self.model = None

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Load and freeze the checkpoint on ``device`` (once)."""
        if self.model is not None:
            return
        import transformers

        model_class = getattr(transformers, self.model_class)
        self.processor, self.model, self.device, self.dtype = load_frozen(
            self.name, model_class, self.model_path, self.dtype_name, device, self.local_files_only
        )
        self.on_load()
        log.info("%s: loaded %s on %s (%s)", self.name, self.model_path, self.device, self.dtype)

    def on_load(self) -> None:
        """What depends on the loaded weights; raise here for a checkpoint that cannot serve."""

    def ready(self) -> None:
        """Raise the not-set-up error unless :meth:`setup` has loaded the model."""
        if self.model is None:
            raise not_setup_error(self.name)

    def chunks(self, total: int) -> Iterator[slice]:
        """Micro-batches of at most ``micro_batch_size`` items covering ``range(total)``."""
        return micro_batches(total, self.micro_batch_size)

    @torch.inference_mode()
    def score_images(
        self,
        records: Sequence[PromptRecord],
        images: Sequence[Image.Image],
        score_chunk: Callable[[Sequence[PromptRecord], torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """``[B]`` float32 on CPU: ``score_chunk(records[c], pixels[c])`` per micro-batch ``c``,
        ``pixels`` being ``self.preprocess(images[c])`` on the model's device and dtype."""
        self.ready()
        check_inputs(self.name, records, images)
        scores = torch.zeros(len(records), dtype=torch.float32)
        for chunk in self.chunks(len(records)):
            pixels = self.preprocess(images[chunk]).to(self.device, self.dtype)  # [b, 3, S, S]
            scores[chunk] = score_chunk(records[chunk], pixels).float().cpu()
        return scores
