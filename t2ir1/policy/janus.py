"""The Janus-Pro policy: loading, freezing, tokenisation of both prompt levels, decoding.

Trained (REFERENCE §1): the language model (decoder layers, norms, text embeddings) and
``lm_head``. Frozen: the understanding vision encoder + aligner, the VQ model, the
generation embeddings, generation aligner and generation head.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import JanusForConditionalGeneration, JanusProcessor

from t2ir1.dtypes import dtype_named
from t2ir1.policy import logprobs as lp
from t2ir1.policy.prompts import image_prompt, semantic_prompt

log = logging.getLogger(__name__)

# Sub-modules of JanusModel that are never trained.
FROZEN_PARTS = ("vision_model", "aligner", "vqmodel", "generation_embeddings", "generation_aligner", "generation_head")

# Linear layers of every LLaMA decoder layer that LoRA adapts when model.lora.target_modules is null.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_KEYS = ("r", "alpha", "target_modules", "dropout")


# How the VQ decoder computes (SamplingOptions.decode_dtype): "auto" = bfloat16 autocast on a CPU
# with native bfloat16 arithmetic (AVX512-BF16 or AMX), else the model's dtype; "model" = the VQ
# model's own dtype always; "bfloat16" = bfloat16 autocast on any device.
DECODE_DTYPES = ("auto", "model", "bfloat16")


@functools.cache
def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), where oneDNN's
    bfloat16 convolutions outrun float32 ones. ``torch.cpu``'s ISA probes are private; a torch
    without them counts as no."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def decode_autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context the VQ decoder runs in for ``dtype`` (one of :data:`DECODE_DTYPES`).

    On the ShapeWorld decoder (32 images, 2 threads, AMD EPYC with AVX512-BF16) bfloat16 autocast
    decodes 1.56x faster than float32; pixels differ by 0.24 grey levels on average (at most 8) and
    958 of the demo's 960 held-out verdicts are unchanged (the other two trade places). A float32
    decoder on a GPU keeps its dtype under "auto" (not measured there); the paper decodes in the
    bfloat16 the whole model runs in.
    """
    if dtype not in DECODE_DTYPES:
        raise ValueError(f"decode dtype {dtype!r} is unknown; use one of {list(DECODE_DTYPES)}")
    device = torch.device(device)
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cpu" and native_cpu_bfloat16()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Channels-last activations of at most this height and width go through GroupNorm in NCHW (see
# groupnorm_in_nchw): PyTorch's CPU GroupNorm on channels-last input was 8-30x slower than on NCHW at
# 8x8 and 16x16 (16 images, 64 channels, 32 groups, bfloat16 and float32, 2 threads), level at 32x32.
GROUPNORM_NCHW_MAX_SIDE = 16


@contextlib.contextmanager
def groupnorm_in_nchw(module: nn.Module, max_side: int = GROUPNORM_NCHW_MAX_SIDE):
    """Within the context, every ``nn.GroupNorm`` of ``module`` normalises a channels-last input of
    height and width <= ``max_side`` in NCHW and hands the result back channels-last.

    On the ShapeWorld VQ decoder (32 images, 30 of its 48 GroupNorms at 8x8 or 16x16) the decode
    is 1.18x faster (135.7 -> 114.9 ms, median of 8 interleaved rounds, 2 threads; none of the demo's
    960 held-out verdicts changed); pixels move by 0.4 grey levels on average (bfloat16 accumulates in another
    order), as far from a float32 decode as before (0.56 levels on average either way).
    """

    converted: set[int] = set()  # the norms whose current input was turned NCHW

    def to_nchw(norm: nn.GroupNorm, args: tuple) -> tuple | None:
        x = args[0]
        converted.discard(id(norm))
        small = x.dim() == 4 and max(x.shape[-2:]) <= max_side
        if not small or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return None
        converted.add(id(norm))
        return (x.contiguous(), *args[1:])

    def to_channels_last(norm: nn.GroupNorm, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        return out.contiguous(memory_format=torch.channels_last) if id(norm) in converted else None

    handles = []
    try:
        for norm in module.modules():
            if isinstance(norm, nn.GroupNorm):
                handles += [norm.register_forward_pre_hook(to_nchw), norm.register_forward_hook(to_channels_last)]
        yield
    finally:
        for handle in handles:
            handle.remove()


def pixels_to_uint8(pixels: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    """VQ decoder output in ``[-1, 1]`` -> uint8 ``(x + 1) / 2 * 255``, clipped to ``[0, 255]``.

    Rounded by default. ``truncate`` is the original's: it assigns the clipped float array to a
    uint8 numpy array, which truncates (grpo_trainer.py:704-706), so 254.7 becomes 254, not 255
    (``algo.prompt_quirks``).
    """
    scaled = ((pixels.float() + 1) / 2 * 255).clamp(0, 255)
    return (scaled if truncate else scaled.round()).to(torch.uint8)  # non-negative: the cast truncates


class CheckpointError(RuntimeError):
    """A policy checkpoint that cannot be found or loaded."""


def describe_load_error(error: BaseException) -> str:
    """``Type: first line`` of a loading error, without torch's advice to load with ``weights_only=False``
    (which would run the file's code)."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    if "weights_only" in first_line:
        first_line = "it holds objects that a weights-only load refuses"
    return f"{type(error).__name__}: {first_line}"


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype_named(dtype, "model.dtype")


class SequenceLogprobs:
    """``sequence_logprobs`` on top of a class's own ``text_logprobs`` / ``image_logprobs``: the one
    log-prob contract of the policy and its reference (the training step does not know which it holds)."""

    def sequence_logprobs(
        self,
        generation,
        levels: Sequence[str],
        images_per_cot: int,
        chunk_logits: int = lp.LOGPROB_CHUNK_LOGITS,
        temperatures: tuple[float, float] = (1.0, 1.0),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and mask ``[N, C + T_img]`` of a generated batch's trained levels
        (:func:`t2ir1.policy.logprobs.bicot_logprobs`: text tokens first, each CoT repeated for its images);
        ``temperatures``: (text, image) of the scored distributions (1: the model's own, the original's)."""
        text_t, image_t = temperatures
        return lp.bicot_logprobs(
            generation,
            levels,
            images_per_cot,
            text_fn=lambda *text: self.text_logprobs(*text, chunk_logits=chunk_logits, temperature=text_t),
            image_fn=lambda *image, **positions: self.image_logprobs(
                *image, chunk_logits=chunk_logits, temperature=image_t, **positions
            ),
        )


class ReferenceModel(SequenceLogprobs, nn.Module):
    """The frozen initial policy for the KL term.

    Holds its own copy of the trained parts only (language model + ``lm_head``); the frozen
    Janus parts it needs (generation embeddings, aligner, head) are the policy's own
    modules, shared, not copied.

    ``reads_policy_embeddings`` reproduces the original's quirk (``algo.
    reference_reads_policy_embeddings``): its reference forward receives ``inputs_embeds`` made
    by the *policy's* (trained) text embedding table (CaraJ7/T2I-R1 at 2d9d4d1,
    src/t2i-r1/src/open_r1/trainer/grpo_trainer.py:511 and 524-529 for the CoT tokens, 646-654
    and 677-683 for the image prompt), so drift of the text embeddings is invisible to its KL.
    It affects both levels: every text token the reference reads (semantic prompt + CoT, and
    the image prompt's text before the image tokens); the image tokens' embeddings come from
    the frozen generation embeddings, shared by both models anyway.
    """

    def __init__(self, policy: JanusPolicy, reads_policy_embeddings: bool = False):
        super().__init__()
        self.language_model = copy.deepcopy(policy.language_model).eval().requires_grad_(False)
        self.lm_head = copy.deepcopy(policy.lm_head).eval().requires_grad_(False)
        self.reads_policy_embeddings = reads_policy_embeddings
        # plain attribute, not a registered sub-module: shared with the policy, never saved twice
        object.__setattr__(self, "_policy", policy)

    def train(self, mode: bool = True) -> ReferenceModel:  # the reference never leaves eval mode
        return super().train(False)

    def _text_embedding(self) -> nn.Module | None:
        """The table that embeds the text ids the reference reads (None: its own)."""
        return self._policy.language_model.get_input_embeddings() if self.reads_policy_embeddings else None

    @torch.no_grad()
    def text_logprobs(
        self, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits=lp.LOGPROB_CHUNK_LOGITS, temperature=1.0
    ):
        return lp.text_logprobs(
            self.language_model,
            self.lm_head,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            chunk_logits,
            embed=self._text_embedding(),
            temperature=temperature,
        )

    @torch.no_grad()
    def image_logprobs(
        self, prompt_ids, prompt_mask, image_tokens, chunk_logits=lp.LOGPROB_CHUNK_LOGITS, position_ids=None, temperature=1.0
    ):
        policy = self._policy
        return lp.image_logprobs(
            self.language_model,
            policy.generation_head,
            policy.embed_image_tokens,
            prompt_ids,
            prompt_mask,
            image_tokens,
            chunk_logits,
            position_ids=position_ids,
            temperature=temperature,
            embed=self._text_embedding(),
        )


class AdapterFreeReference(ReferenceModel):
    """The reference of a LoRA policy: the policy's own base weights with its adapters disabled.

    Holds no weights (no copy of the language model): every log-prob pass runs the policy's
    modules inside peft's ``disable_adapter()`` context, i.e. the untrained base model.
    """

    # sharding strategies skip it: its modules are the policy's, sharded with the policy
    shares_policy_weights = True

    def __init__(self, policy: JanusPolicy, reads_policy_embeddings: bool = False):
        nn.Module.__init__(self)
        object.__setattr__(self, "_policy", policy)
        # the original's quirk of reading the policy's text embeddings is moot here: under LoRA the
        # embedding table is frozen and the reference's is the policy's own
        self.reads_policy_embeddings = False

    @property
    def language_model(self) -> nn.Module:
        return self._policy.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self._policy.lm_head

    @torch.no_grad()
    def text_logprobs(self, *args, **kwargs):
        with self._policy.adapters_disabled():
            return super().text_logprobs(*args, **kwargs)

    @torch.no_grad()
    def image_logprobs(self, *args, **kwargs):
        with self._policy.adapters_disabled():
            return super().image_logprobs(*args, **kwargs)


def check_lora(lora: Mapping | None, where: str = "model.lora") -> dict | None:
    """The ``model.lora`` node as a plain dict (None = full fine-tuning); raises on bad values."""
    if lora is None:
        return None
    lora = dict(lora)
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; known keys: {list(LORA_KEYS)} (or {where}=null)")
    r = lora.get("r")
    if r is None:  # a node with r: null is full fine-tuning, as the default node
        return None
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{where}.r={r!r}: the LoRA rank must be an integer >= 1 (or {where}.r=null: full fine-tuning)")
    alpha = lora.get("alpha")
    if alpha is not None and not (isinstance(alpha, int | float) and alpha > 0):
        raise ValueError(f"{where}.alpha={alpha!r}: must be > 0 (null = r, a scale of 1)")
    dropout = lora.get("dropout") or 0.0
    if not 0 <= dropout < 1:
        raise ValueError(f"{where}.dropout={dropout!r}: must be in [0, 1)")
    targets = lora.get("target_modules")
    if targets is not None and (isinstance(targets, str) or not all(isinstance(t, str) for t in targets) or not targets):
        raise ValueError(f"{where}.target_modules={targets!r}: a non-empty list of Linear module names, e.g. {list(LORA_TARGETS)}")
    return {
        "r": r,
        "alpha": float(alpha if alpha is not None else r),
        "target_modules": list(targets) if targets is not None else list(LORA_TARGETS),
        "dropout": float(dropout),
    }


class JanusPolicy(SequenceLogprobs, nn.Module):
    """A Janus(-Pro) model with its processor, exposing what BiCoT-GRPO needs.

    Args:
        model, processor: the transformers Janus and its processor.
        lora: ``{r, alpha, target_modules, dropout}`` (``model.lora``): LoRA adapters (peft) on the
            language model's linear layers; only they train. ``None``: full fine-tuning.
    """

    def __init__(self, model: JanusForConditionalGeneration, processor: JanusProcessor, lora: Mapping | None = None):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # the peft wrapper of the language model (None: full fine-tuning); a plain attribute so that
        # the language model's weights are registered once, under their own names
        object.__setattr__(self, "_peft", None)
        lora = check_lora(lora)
        if lora is not None:
            self.add_lora(**lora)
        self.freeze_non_trainable()

    def add_lora(self, r: int, alpha: float, target_modules: Sequence[str], dropout: float = 0.0) -> None:
        """Inject LoRA adapters into the language model in place (``peft``). The adapters are kept in
        float32 (peft's ``autocast_adapter_dtype``) whatever the base weights' dtype."""
        from peft import LoraConfig, get_peft_model

        if self._peft is not None:
            raise RuntimeError("this policy already has LoRA adapters")
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout, bias="none")
        try:
            peft_model = get_peft_model(self.language_model, config)
        except ValueError as error:
            raise ValueError(
                f"model.lora.target_modules={list(target_modules)}: {error}. Name Linear layers of the language "
                f"model's decoder layers, e.g. {list(LORA_TARGETS)}."
            ) from None
        object.__setattr__(self, "_peft", peft_model)
        log.info("LoRA r=%d alpha=%g on %s: %d adapter parameters", r, alpha, list(target_modules),
                 sum(p.numel() for n, p in self.language_model.named_parameters() if "lora_" in n))

    @property
    def has_lora(self) -> bool:
        return self._peft is not None

    def adapters_disabled(self) -> contextlib.AbstractContextManager:
        """Context in which the language model is the base model (peft's ``disable_adapter()``)."""
        return self._peft.disable_adapter() if self._peft is not None else contextlib.nullcontext()

    def merge_lora(self) -> None:
        """Fold the adapters into the base weights and remove them (plain transformers modules)."""
        if self._peft is None:
            return
        self._peft.merge_and_unload()
        for module in self.language_model.modules():  # peft's bookkeeping attribute, not a weight
            if "peft_config" in module.__dict__:
                del module.__dict__["peft_config"]
        object.__setattr__(self, "_peft", None)
        self.freeze_non_trainable()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        dtype: str | torch.dtype = "float32",
        trust_remote_code: bool = False,
        attn_implementation: str | None = "sdpa",
        local_files_only: bool | None = None,
        lora: Mapping | None = None,
    ) -> JanusPolicy:
        """Load a transformers-format Janus checkpoint (hub id or local directory).

        DeepSeek's original layout (``deepseek-ai/Janus-Pro-*``, the released T2I-R1
        weights) must be converted first; see ``python -m t2ir1.export --help``.
        """
        source = str(name_or_path)
        # hub ids are "org/name"; anything else that does not exist is a mistyped local path
        looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1
        path = Path(source).expanduser()
        if looks_local and not path.exists():
            raise CheckpointError(
                f"model.name_or_path={source!r}: no such directory. Point it at a transformers-format Janus "
                "checkpoint (config.json + *.safetensors + processor files), or use model=tiny offline."
            )
        if path.is_dir() and not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path} has no config.json, so it is not a transformers checkpoint. If it holds DeepSeek's "
                "original Janus layout, convert it with `python -m t2ir1.export convert-deepseek SRC DST`."
            )
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") == "1"
        kwargs = {
            "dtype": _resolve_dtype(dtype),
            "trust_remote_code": trust_remote_code,
            "local_files_only": local_files_only,
        }
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = JanusForConditionalGeneration.from_pretrained(source, **kwargs)
            processor = JanusProcessor.from_pretrained(
                source, trust_remote_code=trust_remote_code, local_files_only=local_files_only
            )
        except OSError as err:
            raise CheckpointError(
                f"could not load Janus checkpoint {source!r}: {err}\n"
                "Without network access, pass a local directory (model.name_or_path=/path/to/Janus-Pro-1B) "
                "or run offline with model=tiny / model=shapeworld."
            ) from err
        except Exception as err:
            raise CheckpointError(
                f"could not load Janus checkpoint {source!r} ({describe_load_error(err)}). Its weight files "
                "are corrupt, truncated, of another model size than its config.json, or hold pickled objects "
                "(never unpickled here). Re-export or re-download the directory (python -m t2ir1.export)."
            ) from None
        return cls(model, processor, lora=lora)

    def freeze_non_trainable(self) -> None:
        for name in FROZEN_PARTS:
            getattr(self.model.model, name).eval().requires_grad_(False)
        if self._peft is None:
            self.language_model.requires_grad_(True)
            self.lm_head.requires_grad_(True)
            return
        # LoRA: only the adapters train; the base language model and lm_head stay as loaded
        self.lm_head.requires_grad_(False)
        for name, param in self.language_model.named_parameters():
            param.requires_grad_("lora_" in name)

    def train(self, mode: bool = True) -> JanusPolicy:
        super().train(mode)
        for name in FROZEN_PARTS:  # frozen parts stay in eval mode (no dropout drift)
            getattr(self.model.model, name).eval()
        return self

    def make_reference(self, reads_policy_embeddings: bool = False) -> ReferenceModel:
        """The frozen initial policy: a copy of the trained parts, or with LoRA the base model
        itself under disabled adapters (no copy)."""
        if self._peft is not None:
            return AdapterFreeReference(self, reads_policy_embeddings=reads_policy_embeddings)
        return ReferenceModel(self, reads_policy_embeddings=reads_policy_embeddings)

    # ---------------------------------------------------------------- parts
    @property
    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def generation_head(self) -> nn.Module:
        return self.model.model.generation_head

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.vision_config.num_image_tokens

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        """Where the policy computes. The generation head is never sharded or offloaded, so its
        device is the compute device also under FSDP2 with ``cpu_offload`` (where the sharded
        ``lm_head`` weights live in CPU memory between uses)."""
        return next(self.generation_head.parameters()).device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def boi_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.boi_token)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def embed_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """VQ codes ``[N, T]`` -> input embeddings ``[N, T, H]`` (generation embeddings + aligner)."""
        return self.model.prepare_embeddings_for_image_generation(image_tokens)

    # ---------------------------------------------------------------- log-probs
    # The reference (ReferenceModel) has the same two methods (without gradients), and both take
    # sequence_logprobs from SequenceLogprobs: the training step does not know which it holds.
    def text_logprobs(
        self, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_logits=lp.LOGPROB_CHUNK_LOGITS, temperature=1.0
    ):
        """Semantic-CoT log-probs ``[N, C]`` (differentiable): :func:`t2ir1.policy.logprobs.text_logprobs`."""
        batch = (prompt_ids, prompt_mask, completion_ids, completion_mask)
        return lp.text_logprobs(self.language_model, self.lm_head, *batch, chunk_logits, temperature=temperature)

    def image_logprobs(
        self, prompt_ids, prompt_mask, image_tokens, chunk_logits=lp.LOGPROB_CHUNK_LOGITS, position_ids=None, temperature=1.0
    ):
        """Image-token log-probs ``[N, T]`` (differentiable): :func:`t2ir1.policy.logprobs.image_logprobs`
        (``position_ids``: explicit image-prompt positions, ``algo.prompt_quirks``)."""
        return lp.image_logprobs(
            self.language_model,
            self.generation_head,
            self.embed_image_tokens,
            prompt_ids,
            prompt_mask,
            image_tokens,
            chunk_logits,
            position_ids=position_ids,
            temperature=temperature,
        )

    # ---------------------------------------------------------------- prompts
    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, padding_side="left", return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def encode_semantic_prompts(
        self, prompts: Sequence[str], reasoning_template: str, system_prompt: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded semantic prompts: ids and mask ``[B, P]`` (BOS first)."""
        return self._encode([semantic_prompt(p, reasoning_template, system_prompt) for p in prompts])

    def encode_image_prompts(
        self, prompts: Sequence[str], cots: Sequence[str | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded image prompts ending in ``<begin_of_image>``: ids and mask ``[N, P]``."""
        texts = [image_prompt(p, c) + self.tokenizer.boi_token for p, c in zip(prompts, cots, strict=True)]
        return self._encode(texts)

    def decode_text(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor, strip: bool = True) -> list[str]:
        """CoT texts of the completions' unmasked tokens; ``strip=False`` keeps the leading space the
        original's image prompt carries (grpo_trainer.py:543, ``algo.prompt_quirks``)."""
        texts = [
            self.tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
            for ids, mask in zip(completion_ids, completion_mask, strict=True)
        ]
        return [t.strip() for t in texts] if strip else texts

    # ---------------------------------------------------------------- images
    @torch.no_grad()
    def decode_images(
        self,
        image_tokens: torch.Tensor,
        micro_batch_size: int = 16,
        truncate: bool = False,
        layout: torch.memory_format | None = None,
        dtype: str = "auto",
    ) -> torch.Tensor:
        """VQ codes ``[N, T]`` -> uint8 RGB ``[N, S, S, 3]`` via ``(x + 1) / 2 * 255``, clipped
        (rounded; ``truncate``: the original's cast, see :func:`pixels_to_uint8`).

        The arithmetic is ``JanusVQVAE.decode``'s (codebook lookup, ``post_quant_conv``, decoder).
        ``layout`` of the activations (default: channels-last on CPU, where oneDNN's convolutions
        skip their layout reorders: 1.3x faster on the ShapeWorld decoder, 32 images, idle, 1 or 2
        threads, pixels within one grey level of NCHW; GPUs keep NCHW until it is measured there).
        ``dtype`` of the decoder's arithmetic (:data:`DECODE_DTYPES`, :func:`decode_autocast`).
        Channels-last GroupNorms of small maps run in NCHW (:func:`groupnorm_in_nchw`).
        """
        vq = self.model.model.vqmodel
        if layout is None:
            layout = torch.channels_last if image_tokens.device.type == "cpu" else torch.contiguous_format
        autocast = decode_autocast(dtype, image_tokens.device)  # decided once per call, entered per micro-batch
        nchw_norms = groupnorm_in_nchw(vq.decoder) if layout == torch.channels_last else contextlib.nullcontext()
        pieces = []
        with nchw_norms:
            for start in range(0, image_tokens.shape[0], micro_batch_size):
                latents = vq.quantize.get_codebook_entry(image_tokens[start : start + micro_batch_size])
                with autocast:
                    pixels = vq.decoder(vq.post_quant_conv(latents.contiguous(memory_format=layout)))  # [n, 3, S, S]
                pieces.append(pixels_to_uint8(pixels, truncate).permute(0, 2, 3, 1).cpu())  # [n, S, S, 3]
        return torch.cat(pieces)

    @staticmethod
    def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
        return [Image.fromarray(p.numpy()) for p in pixels]
