"""The generation engine: the one path by which t2ir1 samples (training, generate, eval, callbacks).

One call generates a batch (REFERENCE §2.1-2.3)::

    semantic prompts -> CoT sampling -> image prompts -> CFG image-token sampling -> VQ decode

and returns a :class:`Generation` (texts, token ids, masks, rollout log-probs, images).

Why it is fast. An eager ``LlamaModel.forward`` per token pays, at every one of the 576
image steps, for mask construction, cache bookkeeping and a growing ``DynamicCache`` that
re-allocates; on small models that overhead *is* the step. Here:

* the KV cache is allocated once per chunk of rows for its maximum length (prompt +
  ``max_new_tokens`` for the CoT, prompt + the image tokens for the image) and written in
  place;
* masks are built once and a table of rotary cos/sin once per chunk; a decode step slices
  views of them and indexes the table (no allocation, no rotary recomputation);
* the decoder layers are called part by part (norm, q/k/v, rotary, SDPA, o_proj, MLP) on
  that cache, without ``LlamaModel.forward``'s per-call machinery; on CPU the q/k/v and the
  gate/up projections run as one matrix product each and residual additions are fused into
  ``addmm``; grouped-query attention shares kv heads inside SDPA instead of copying them;
* Gumbel noise is drawn per prompt in blocks of steps (:class:`GumbelNoise`), not per step;
* finished CoT rows are dropped from the batch when half of the rows have finished;
* at CFG weight 1 no unconditional rows run; with ``cfg_uncond="short"`` the unconditional
  rows attend only to ``BOS <begin_of_image>`` and their own image tokens;
* rows are generated in chunks sized from a memory budget;
* ``compile`` applies ``torch.compile`` to a static-shape variant of the decode step
  (attention over the whole preallocated cache under a mask, cache writes by index), which
  CUDA graphs can capture (``reduce-overhead``).

Sampling draws Gumbel noise from one generator per prompt over that prompt's rows, so a
prompt's samples do not depend on its batch, its chunk, its rank or the number of ranks.
Under FSDP2 the policy's sharded units are gathered once for the whole generation
(``FSDPModule.unshard``) and resharded afterwards, as RL frameworks gather weights for
their rollout engines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from t2ir1.policy.janus import DECODE_DTYPES
from t2ir1.policy.logprobs import positions_from_mask
from t2ir1.rollout.image_prompts import image_prompts
from t2ir1.rollout.sampling import draw, prompt_generators, sampling_logits, unconditional_ids

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
CFG_UNCOND = ("full", "short")
GIB = 1024**3


@dataclass(frozen=True)
class SamplingOptions:
    """How the engine samples; defaults are the paper's (REFERENCE §2.1-2.2).

    Attributes:
        max_new_tokens: longest semantic CoT in tokens (paper: 1024 in training).
        text_temperature, text_top_k, text_top_p: the CoT sampler (0 = greedy; top_k 0 and
            top_p 1 keep the whole vocabulary; the original samples with top_k 50).
        image_temperature, image_top_k, image_top_p: the image-token sampler.
        cfg_weight: classifier-free guidance ``uncond + w * (cond - uncond)``; 1 runs no
            unconditional rows.
        cfg_uncond: ``full`` (the original: BOS + pads + ``<begin_of_image>``, pads attended)
            or ``short`` (BOS + ``<begin_of_image>`` only; cheaper).
        chunk_rows: image rows per generation chunk (``None``: from ``memory_budget_gib``).
        memory_budget_gib: KV cache + logits budget of a chunk (``None``: 60% of the free
            GPU memory, 2 GiB on CPU).
        compile: ``none`` | ``default`` | ``reduce-overhead`` | ``max-autotune``
            (``torch.compile`` of the static decode step).
        decode_micro_batch_size: images per VQ-decoder call.
        decode_dtype: the VQ decoder's arithmetic: ``auto`` (bfloat16 autocast on a CPU with
            native bfloat16, else the model's dtype), ``model`` or ``bfloat16``
            (:func:`t2ir1.policy.janus.decode_autocast`). It changes the pixels slightly, never
            the sampled tokens.
        prompt_quirks: the original's image-prompt details (``t2ir1.rollout.image_prompts``:
            unstripped CoT, right padding with the position gap before ``<begin_of_image>``,
            unconditional rows attending to every position) and its uint8 truncation when
            decoding images; needs ``cfg_uncond=full``.
    """

    max_new_tokens: int = 1024
    text_temperature: float = 1.0
    text_top_k: int = 0
    text_top_p: float = 1.0
    image_temperature: float = 1.0
    image_top_k: int = 0
    image_top_p: float = 1.0
    cfg_weight: float = 5.0
    cfg_uncond: str = "full"
    chunk_rows: int | None = None
    memory_budget_gib: float | None = None
    compile: str = "none"
    decode_micro_batch_size: int = 16
    decode_dtype: str = "auto"
    prompt_quirks: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, ">= 1"),
            (self.text_temperature >= 0, "text_temperature", self.text_temperature, ">= 0 (0 = greedy)"),
            (self.image_temperature >= 0, "image_temperature", self.image_temperature, ">= 0 (0 = greedy)"),
            (self.text_top_k >= 0, "text_top_k", self.text_top_k, ">= 0 (0 = off)"),
            (self.image_top_k >= 0, "image_top_k", self.image_top_k, ">= 0 (0 = off)"),
            (0 < self.text_top_p <= 1, "text_top_p", self.text_top_p, "in (0, 1] (1 = off)"),
            (0 < self.image_top_p <= 1, "image_top_p", self.image_top_p, "in (0, 1] (1 = off)"),
            (
                math.isfinite(self.cfg_weight) and self.cfg_weight >= 0,
                "cfg_weight",
                self.cfg_weight,
                ">= 0 (1 = no guidance, 0 = unconditional only, paper: 5)",
            ),
            (self.cfg_uncond in CFG_UNCOND, "cfg_uncond", self.cfg_uncond, f"one of {list(CFG_UNCOND)}"),
            (self.compile in COMPILE_MODES, "compile", self.compile, f"one of {list(COMPILE_MODES)}"),
            (self.chunk_rows is None or self.chunk_rows >= 1, "chunk_rows", self.chunk_rows, ">= 1 or null"),
            (
                self.memory_budget_gib is None or self.memory_budget_gib > 0,
                "memory_budget_gib",
                self.memory_budget_gib,
                "> 0 or null",
            ),
            (self.decode_micro_batch_size >= 1, "decode_micro_batch_size", self.decode_micro_batch_size, ">= 1"),
            (self.decode_dtype in DECODE_DTYPES, "decode_dtype", self.decode_dtype, f"one of {list(DECODE_DTYPES)}"),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"sampling option {key}={value!r} is out of range: it must be {allowed}")
        if self.prompt_quirks and self.cfg_uncond != "full":
            raise ValueError(
                f"sampling options prompt_quirks=True and cfg_uncond={self.cfg_uncond!r} contradict each other: "
                "the original's unconditional rows are the full ones (BOS + pads + <begin_of_image>, every "
                "position attended). Set algo.cfg_uncond=full, or algo.prompt_quirks=false to keep the short rows"
            )

    @property
    def guided(self) -> bool:
        return self.cfg_weight != 1.0


@dataclass
class Generation:
    """Everything one engine call sampled; image rows ``[N = B * G * k]`` grouped per prompt.

    Text rows (``B * G``) are expanded to image rows by ``images_per_cot`` (``k``).
    """

    prompts: list[str]  # [B]
    group_size: int  # G: CoTs (or images without CoT) per prompt
    images_per_cot: int  # k
    cots: list[str | None]  # [N] the CoT each image was drawn from (None: no CoT)
    image_prompt_ids: torch.Tensor  # [N, P_img] ending in <begin_of_image>
    image_prompt_mask: torch.Tensor  # [N, P_img]
    image_tokens: torch.Tensor  # [N, T]
    image_logp: torch.Tensor  # [N, T] float32 log-prob of each token under the sampling distribution
    images: list[Image.Image]  # [N]
    semantic_prompt_ids: torch.Tensor | None = None  # [B*G, P] left-padded
    semantic_prompt_mask: torch.Tensor | None = None
    completion_ids: torch.Tensor | None = None  # [B*G, C] padded after EOS
    completion_mask: torch.Tensor | None = None  # [B*G, C] 1 up to and including the first EOS
    text_logp: torch.Tensor | None = None  # [B*G, C] float32, under the CoT sampling distribution
    # [N, P_img] positions of the image prompts as sampled (None: from the mask; prompt_quirks: 0 .. P-1)
    image_prompt_positions: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.image_tokens.shape[0]

    @property
    def has_cot(self) -> bool:
        return self.completion_ids is not None


# ----------------------------------------------------------------------------- the decoder, part by part
# Largest total of q/k/v + gate/up weights fused on CPU (see Decoder.fusion_pays).
FUSE_MAX_BYTES = 256 << 20

class _StaticCache:
    """Keys and values of every layer, preallocated: ``[L, R, n_kv, S, d]`` each."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype, device):
        shape = (layers, rows, kv_heads, length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (finished CoT rows leave the batch)."""
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)


@dataclass
class _Layer:
    """A decoder layer's modules, and its projections fused into one matrix each where that pays.

    On CPU every kernel launch costs about as much as the arithmetic of a tiny layer, so the
    q/k/v projections run as one matrix product and gate/up as another (built from the live
    weights at each generation, so training updates are seen). On accelerators the separate
    weights are used as they are (no copy of the weights in memory).
    """

    module: torch.nn.Module
    qkv: torch.Tensor | None = None  # [(h + 2 n_kv) d, H]
    qkv_bias: torch.Tensor | None = None
    gate_up: torch.Tensor | None = None  # [2 I, H]
    # LoRA: o_proj / down_proj weights with the adapters folded in (fused path only)
    o_weight: torch.Tensor | None = None
    down_weight: torch.Tensor | None = None


def _is_adapted(linear: torch.nn.Module) -> bool:
    """A peft LoRA layer whose adapters act (not merged into the base weight, not disabled)."""
    return (
        hasattr(linear, "base_layer")
        and hasattr(linear, "get_delta_weight")
        and not getattr(linear, "disable_adapters", False)
        and not getattr(linear, "merged", False)
        and any(name in linear.lora_A for name in linear.active_adapters)
    )


def effective_weight(linear: torch.nn.Module) -> torch.Tensor:
    """The weight ``linear`` applies: a LoRA layer's base weight plus its active adapters' deltas,
    as peft's ``merge`` computes them (``base += delta``); a plain Linear's own weight."""
    if not _is_adapted(linear):
        return linear.weight
    base = linear.get_base_layer().weight
    merged = base.detach().clone()
    for name in linear.active_adapters:
        if name in linear.lora_A:
            merged += linear.get_delta_weight(name).detach()
    return merged


def _norm(norm: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``LlamaRMSNorm`` (float32 math); one fused kernel when the activations are float32."""
    if hidden.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(hidden, (hidden.shape[-1],), norm.weight, norm.variance_epsilon)
    return norm(hidden)


def _linear_residual(
    residual: torch.Tensor, inputs: torch.Tensor, linear: torch.nn.Module, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``residual + linear(inputs)`` as one ``addmm`` (``[R, Q, *]`` each); ``weight`` replaces
    ``linear``'s own (a LoRA layer's merged weight)."""
    if weight is None:
        if _is_adapted(linear):  # peft's forward: base + adapters
            return residual + linear(inputs)
        weight = linear.weight
    if linear.bias is not None or residual.dtype != weight.dtype:
        return residual + F.linear(inputs, weight, linear.bias)
    flat = residual.reshape(-1, residual.shape[-1])
    return torch.addmm(flat, inputs.reshape(-1, inputs.shape[-1]), weight.t()).view(residual.shape)


def _project(decoder: Decoder, layer: _Layer, hidden: torch.Tensor, rotary: torch.Tensor):
    """A layer's input -> rotated query ``[R, h, Q, d]``, rotated key and value ``[R, n_kv, Q, d]``.

    ``rotary [R, Q, 2, d]`` holds cos and the signed sin of each position (:meth:`Decoder.rotary`):
    ``x * cos + rotate_half(x) * sin == x * cos + roll(x, d / 2) * signed_sin``.
    """
    rows, length = hidden.shape[:2]
    h, kv, d = decoder.heads, decoder.kv_heads, decoder.head_dim
    attn = layer.module.self_attn
    normed = _norm(layer.module.input_layernorm, hidden)
    cos, sin = rotary[:, :, :1], rotary[:, :, 1:]  # [R, Q, 1, d]
    if layer.qkv is not None:
        qkv = F.linear(normed, layer.qkv, layer.qkv_bias).view(rows, length, h + 2 * kv, d)
        qk = qkv[:, :, : h + kv]
        qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # queries and keys rotated at once
        query, key, value = qk[:, :, :h], qk[:, :, h:], qkv[:, :, h + kv :]
    else:
        query = attn.q_proj(normed).view(rows, length, h, d)
        key = attn.k_proj(normed).view(rows, length, kv, d)
        value = attn.v_proj(normed).view(rows, length, kv, d)
        query = query * cos + query.roll(d // 2, dims=-1) * sin
        key = key * cos + key.roll(d // 2, dims=-1) * sin
    return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)


def _finish_layer(decoder: Decoder, layer: _Layer, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Attention output ``[R, h, Q, d]`` -> o_proj + residual, then the MLP block + residual."""
    rows, length = hidden.shape[:2]
    module = layer.module
    attended = attended.transpose(1, 2).reshape(rows, length, decoder.heads * decoder.head_dim)
    hidden = _linear_residual(hidden, attended, module.self_attn.o_proj, layer.o_weight)
    normed = _norm(module.post_attention_layernorm, hidden)
    mlp = module.mlp
    if layer.gate_up is not None:
        gate, up = F.linear(normed, layer.gate_up).chunk(2, dim=-1)
    else:
        gate, up = mlp.gate_proj(normed), mlp.up_proj(normed)
    return _linear_residual(hidden, mlp.act_fn(gate) * up, mlp.down_proj, layer.down_weight)


class Decoder:
    """Runs a LLaMA-layout ``language_model`` (Janus's) on a :class:`_StaticCache`.

    The layer parts are the model's own modules and weights (``input_layernorm``,
    ``self_attn.q_proj`` ..., ``mlp``), the rotary table comes from its ``rotary_emb``: the
    arithmetic is ``LlamaDecoderLayer``'s, tested token for token against ``LlamaModel.forward``
    and transformers' ``generate``.
    """

    def __init__(self, language_model: torch.nn.Module):
        config = language_model.config
        self.lm = language_model
        self.modules = list(language_model.layers)[: config.num_hidden_layers]
        self.layers = [_Layer(module) for module in self.modules]
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the decoder layers compute in (their weights' as gathered, or autocast's);
        hidden states and the KV cache are kept in it."""
        return _compute_dtype(self.modules[0].self_attn.q_proj.weight)

    def fusion_pays(self) -> bool:
        """Whether fused copies of the q/k/v and gate/up weights are worth building at each generation.

        Fusing saves kernel launches, which dominate a small model's step, but copies the weights
        (one weight read, and their memory twice). At Janus-Pro-1B's dimensions on CPU the copy took
        13 s and the fused engine ran 2.2-2.6 s per image token against 0.9-1.2 s unfused
        (benchmarks/rollout.py (c)); the ShapeWorld and tiny models' layers are a few MiB.
        """
        projections = ("q_proj", "k_proj", "v_proj")
        total = sum(
            getattr(module.self_attn, name).weight.nbytes for module in self.modules for name in projections
        ) + sum(getattr(module.mlp, name).weight.nbytes for module in self.modules for name in ("gate_proj", "up_proj"))
        return total <= FUSE_MAX_BYTES

    def refresh(self, fuse: bool) -> None:
        """Take the layers' current weights (fused copies when ``fuse``; see :class:`_Layer`)."""
        self.layers = []
        for module in self.modules:
            attn, mlp = module.self_attn, module.mlp
            layer = _Layer(module)
            fusable = all(getattr(mlp, name).bias is None for name in ("gate_proj", "up_proj"))
            if fuse and fusable:
                # LoRA layers contribute their merged weights (effective_weight): the fused copies
                # are made anyway, so the adapters cost nothing per token here
                projections = (attn.q_proj, attn.k_proj, attn.v_proj)
                layer.qkv = torch.cat([effective_weight(p) for p in projections]).detach()
                if attn.q_proj.bias is not None:
                    layer.qkv_bias = torch.cat([p.bias for p in projections]).detach()
                layer.gate_up = torch.cat([effective_weight(mlp.gate_proj), effective_weight(mlp.up_proj)]).detach()
                if _is_adapted(attn.o_proj):
                    layer.o_weight = effective_weight(attn.o_proj)
                if _is_adapted(mlp.down_proj):
                    layer.down_weight = effective_weight(mlp.down_proj)
            self.layers.append(layer)

    def new_cache(self, rows: int, length: int, dtype, device) -> _StaticCache:
        return _StaticCache(len(self.layers), rows, self.kv_heads, length, self.head_dim, dtype, device)

    def rotary_table(self, length: int, dtype, device) -> torch.Tensor:
        """``[length, 2, d]``: cos and signed sin (``-sin`` on the first half) of positions ``0 .. length-1``."""
        positions = torch.arange(length, device=device)[None]
        cos, sin = self.lm.rotary_emb(torch.empty(1, length, 1, dtype=dtype, device=device), positions)
        half = self.head_dim // 2
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        return torch.stack([cos[0], sin[0]], dim=1)

    def _attend(self, query, keys, values, mask):
        # grouped-query attention: SDPA shares each kv head across its query heads (no copy)
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, enable_gqa=self.groups > 1)

    def forward(
        self,
        hidden: torch.Tensor,
        rotary: torch.Tensor,
        cache: _StaticCache,
        start: int,
        key_mask: torch.Tensor,
        split: int | None = None,
        split_offset: int = 0,
    ) -> torch.Tensor:
        """Run ``hidden [R, Q, H]`` at cache slots ``[start, start + Q)``; returns normed states ``[R, Q, H]``.

        Args:
            rotary: ``[R, Q, 2, d]`` rows of :meth:`rotary_table` at each query's position.
            key_mask: ``[R, 1, Q, start + Q]`` bool, True where a query may attend a key.
            split, split_offset: rows ``[split:]`` (the short unconditional rows) attend only to
                keys from slot ``split_offset`` on.
        """
        end = start + hidden.shape[1]
        for index, layer in enumerate(self.layers):
            query, key, value = _project(self, layer, hidden, rotary)
            cache.keys[index, :, :, start:end] = key
            cache.values[index, :, :, start:end] = value
            keys, values = cache.keys[index, :, :, :end], cache.values[index, :, :, :end]
            if split is None:
                out = self._attend(query, keys, values, key_mask)
            else:
                out = torch.cat(
                    [
                        self._attend(query[:split], keys[:split], values[:split], key_mask[:split]),
                        self._attend(
                            query[split:],
                            keys[split:, :, split_offset:],
                            values[split:, :, split_offset:],
                            key_mask[split:, ..., split_offset:],
                        ),
                    ]
                )
            hidden = _finish_layer(self, layer, hidden, out)
        return _norm(self.lm.norm, hidden)


class StaticDecodeStep(torch.nn.Module):
    """One decode step with static shapes, for ``torch.compile`` / CUDA graphs.

    Attention covers the whole preallocated cache under ``key_valid`` (``[R, S]``), the cache
    write goes to the slot ``slot`` (a 0-d tensor), so every step has the same shapes.
    """

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, hidden, rotary, keys, values, slot, key_valid):
        d = self.decoder
        mask = key_valid[:, None, None, :]  # [R, 1, 1, S]
        for index, layer in enumerate(d.layers):
            query, key, value = _project(d, layer, hidden, rotary)
            keys[index].index_copy_(2, slot.view(1), key)
            values[index].index_copy_(2, slot.view(1), value)
            hidden = _finish_layer(d, layer, hidden, d._attend(query, keys[index], values[index], mask))
        return _norm(d.lm.norm, hidden)


def _prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """Causal + padding mask of a prompt ``valid [R, P]`` -> ``[R, 1, P, P]`` bool.

    Every query also sees itself, so a padding query never has an empty row (SDPA would give
    NaN there, and NaN values would leak through masked keys).
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    return ((causal & valid[:, None, :].bool()) | eye)[:, None]


@contextmanager
def gathered(*modules: torch.nn.Module) -> Iterator[None]:
    """Unshard every FSDP2 unit in ``modules`` for the block, reshard after (no-op unsharded)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        yield
        return
    units = [m for module in modules for m in module.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


def _head_dtype(head: torch.nn.Module) -> torch.dtype:
    """The dtype ``head`` takes its input in. Under FSDP2 mixed precision the decoder layers
    compute in ``param_dtype`` while frozen heads outside its units keep theirs (the units'
    forward hooks, which cast inputs, are bypassed when the layers are called part by part).
    Read once per chunk, not per decode step."""
    return _compute_dtype(next(head.parameters()))


def _compute_dtype(parameter: torch.Tensor) -> torch.dtype:
    device_type = parameter.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return parameter.dtype


class GumbelNoise:
    """Gumbel noise of every sampling step, drawn per prompt in blocks of steps.

    Sampling is ``argmax(logits + g)`` with ``g = -log(E)``, ``E ~ Exp(1)`` (Gumbel-max). Each
    prompt's generator draws ``[block, rows_per_generator, V]`` uniforms at once for its own
    rows, so one call serves ``block`` steps instead of one call per prompt per step, and a
    prompt's stream does not depend on its batch (the block size depends only on
    ``rows_per_generator`` and ``V``).
    """

    #: uniforms drawn per prompt at once (bytes); bounds the noise held in memory
    BLOCK_BYTES = 4 << 20

    def __init__(self, generators: Sequence[torch.Generator], rows_per_generator: int, vocab: int, steps: int, device):
        self.generators = list(generators)
        self.rows, self.vocab, self.device = rows_per_generator, vocab, device
        self.block = max(1, min(steps, self.BLOCK_BYTES // (4 * rows_per_generator * vocab)))
        self._first, self._noise = 0, None  # steps [first, first + block) are in _noise

    def __call__(self, step: int) -> torch.Tensor:
        """``[len(generators) * rows_per_generator, V]`` noise of ``step`` (steps are asked in order)."""
        if self._noise is None or step >= self._first + self.block:
            self._first = step if self._noise is None else self._first + self.block
            uniform = torch.stack(
                [
                    torch.rand(self.block, self.rows, self.vocab, generator=g, device=g.device, dtype=torch.float32)
                    for g in self.generators
                ],
                dim=1,
            ).to(self.device)  # [block, P, rows, V]
            exponential = (-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20)  # Exp(1) draws, never 0
            self._noise = (-torch.log(exponential)).flatten(1, 2)  # [block, P * rows, V]
        return self._noise[step - self._first]


# ----------------------------------------------------------------------------- the engine
class GenerationEngine:
    """Generates batches for one policy with fixed :class:`SamplingOptions`.

    Args:
        policy: a :class:`~t2ir1.policy.janus.JanusPolicy`.
        options: sampling settings.
    """

    def __init__(self, policy, options: SamplingOptions):
        self.policy = policy
        self.options = options
        self._decoder: Decoder | None = None
        self._static_step: Callable | None = None
        self._weights_read = False  # True while generate() holds one read of the weights

    # ------------------------------------------------------------------ helpers
    @property
    def decoder(self) -> Decoder:
        # built lazily: FSDP replaces the layers in place after the policy is built
        if self._decoder is None or self._decoder.lm is not self.policy.language_model:
            self._decoder = Decoder(self.policy.language_model)
            self._static_step = None
        return self._decoder

    def _refresh(self) -> None:
        """Read the live weights (training changes them between generations); fuse them on CPU.

        Inside :meth:`generate` the weights are read once for both levels (``_weights_read``).
        """
        if not self._weights_read:
            self.decoder.refresh(fuse=self.policy.lm_head.weight.device.type == "cpu" and self.decoder.fusion_pays())

    @contextmanager
    def _weights_once(self) -> Iterator[None]:
        """One weight read (and CPU fusion) for the whole block: the CoT and the image level share it.

        The language model samples in eval mode (LoRA dropout off), whatever mode training left it in.
        """
        self._refresh()
        self._weights_read = True
        language_model = self.policy.language_model
        was_training = language_model.training
        language_model.train(False)
        try:
            yield
        finally:
            self._weights_read = False
            language_model.train(was_training)

    def _step_fn(self) -> Callable | None:
        if self.options.compile == "none":
            return None
        if self._static_step is None:
            step = StaticDecodeStep(self.decoder)
            self._static_step = torch.compile(step, mode=self.options.compile, dynamic=False, fullgraph=True)
        return self._static_step

    def chunk_prompts(self, rows_per_prompt: int, length: int, vocab: int, guided: bool) -> int:
        """Prompts per chunk: whole prompts (their generators stay whole) within the memory budget."""
        if self.options.chunk_rows is not None:
            return max(1, self.options.chunk_rows // rows_per_prompt)
        d = self.decoder
        param = self.policy.lm_head.weight
        dtype_bytes = torch.finfo(_compute_dtype(param)).bits // 8
        per_row = 2 * len(d.layers) * d.kv_heads * d.head_dim * length * dtype_bytes  # keys + values
        per_row = per_row * (2 if guided else 1) + 3 * vocab * 4  # logits, noise, filtered (fp32)
        budget = self.options.memory_budget_gib
        if budget is None:
            if param.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(param.device)
                budget_bytes = 0.6 * free
            else:
                budget_bytes = 2 * GIB
        else:
            budget_bytes = budget * GIB
        return max(1, int(budget_bytes // (per_row * rows_per_prompt)))

    # ------------------------------------------------------------------ entry point
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        group_size: int = 1,
        images_per_cot: int = 1,
        use_cot: bool = True,
        reasoning_template: str | None = None,
        system_prompt: str | None = None,
        on_images: Callable[[int, list[Image.Image]], None] | None = None,
    ) -> Generation:
        """Generate ``group_size * images_per_cot`` images for each prompt.

        Args:
            prompts: ``B`` prompt texts.
            seeds: ``B`` sampling seeds, one per prompt (its generator draws for its rows).
            group_size: CoTs per prompt (G); without CoT, images per prompt.
            images_per_cot: images drawn per CoT (k).
            use_cot: sample a semantic CoT first (T2I-R1) or draw from the bare prompt.
            reasoning_template, system_prompt: the semantic prompt (``use_cot`` only).
            on_images: called with ``(first_row, images)`` as each chunk is decoded.
        Returns:
            A :class:`Generation` with ``N = B * G * k`` image rows, prompt-major.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt")
        if not prompts:
            raise ValueError("no prompts to generate")
        policy, timings = self.policy, {}
        device = policy.device
        with gathered(policy.language_model, policy.lm_head), self._weights_once():
            semantic = None
            if use_cot:
                start = time.perf_counter()
                if reasoning_template is None or system_prompt is None:
                    raise ValueError("use_cot=True needs reasoning_template and system_prompt")
                ids, mask = policy.encode_semantic_prompts(list(prompts), reasoning_template, system_prompt)
                semantic = self.sample_cot(ids, mask, group_size, prompt_generators(seeds, device))
                timings["cot"] = time.perf_counter() - start
                cots: list[str | None] = [c for c in semantic["texts"] for _ in range(images_per_cot)]
            else:
                cots = [None] * (len(prompts) * group_size * images_per_cot)
            rows_per_prompt = group_size * images_per_cot
            row_prompts = [p for p in prompts for _ in range(rows_per_prompt)]
            layout = image_prompts(policy, row_prompts, cots, quirks=self.options.prompt_quirks)  # [N, P_img]
            # a fresh set of generators for the image level: its draws do not depend on the CoT length
            generators = prompt_generators(seeds, device)
            for g in generators:
                g.manual_seed(g.initial_seed() ^ 0x1D)
            start = time.perf_counter()
            tokens, logp, images = self.sample_images(
                layout.ids,
                layout.mask,
                rows_per_prompt,
                generators,
                on_images,
                position_ids=layout.positions,
                uncond_mask=layout.uncond_mask,
            )
            timings["image"] = time.perf_counter() - start
        generation = Generation(
            prompts=list(prompts),
            group_size=group_size,
            images_per_cot=images_per_cot,
            cots=cots,
            image_prompt_ids=layout.ids,
            image_prompt_mask=layout.mask,
            image_prompt_positions=layout.positions,
            image_tokens=tokens,
            image_logp=logp,
            images=images,
            timings=timings,
        )
        if semantic is not None:
            generation.semantic_prompt_ids = semantic["prompt_ids"]
            generation.semantic_prompt_mask = semantic["prompt_mask"]
            generation.completion_ids = semantic["completion_ids"]
            generation.completion_mask = semantic["completion_mask"]
            generation.text_logp = semantic["logp"]
        return generation

    # ------------------------------------------------------------------ semantic level
    @torch.no_grad()
    def sample_cot(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        group_size: int,
        generators: list[torch.Generator] | None,
    ) -> dict:
        """``group_size`` CoTs per prompt; ids/mask/log-probs ``[B*G, C]``, texts, expanded prompts.

        ``generators``: one per prompt (``None``: greedy at temperature 0, else the global RNG).
        """
        o, policy, d = self.options, self.policy, self.decoder
        self._refresh()
        ids = prompt_ids.repeat_interleave(group_size, dim=0)  # [B*G, P]
        mask = prompt_mask.repeat_interleave(group_size, dim=0)
        rows, length = ids.shape
        device = ids.device
        total = length + o.max_new_tokens
        embed = policy.language_model.get_input_embeddings()
        dtype = d.compute_dtype
        cache = d.new_cache(rows, total, dtype, device)
        key_valid = torch.zeros(rows, total, dtype=torch.bool, device=device)  # generated slots open per step
        key_valid[:, :length] = mask.bool()
        positions = positions_from_mask(prompt_mask)  # [B, P]
        table = d.rotary_table(int(positions.max()) + o.max_new_tokens + 1, dtype, device)
        last = self._prefill_shared(embed(prompt_ids).to(dtype), table[positions], prompt_mask, group_size, cache)
        position = positions[:, -1:].repeat_interleave(group_size, dim=0)  # [B*G, 1]
        tokens = torch.full((rows, o.max_new_tokens), policy.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros(rows, o.max_new_tokens, dtype=torch.float32, device=device)
        lengths = torch.full((rows,), o.max_new_tokens, dtype=torch.long, device=device)
        active = None  # indices of the rows still in the batch (None: all of them)
        unfinished = torch.ones(rows, dtype=torch.bool, device=device)  # among the active rows
        greedy = o.text_temperature <= 0
        noise = None
        if not greedy and generators is not None:
            noise = GumbelNoise(generators, group_size, policy.lm_head.out_features, o.max_new_tokens, device)
        head_dtype = _head_dtype(policy.lm_head)
        for step in range(o.max_new_tokens):
            logits = sampling_logits(policy.lm_head(last.to(head_dtype)), o.text_temperature, o.text_top_k, o.text_top_p)
            if noise is not None:
                step_noise = noise(step)
                next_token = (logits + (step_noise if active is None else step_noise[active])).argmax(-1)
            else:
                next_token = draw(logits, greedy, None, 1)
            chosen = logits.gather(-1, next_token[:, None]).squeeze(-1) - logits.logsumexp(-1)
            # finished rows that are still in the batch write pad / 0 (nothing is indexed by a mask)
            where = slice(None) if active is None else active
            tokens[where, step] = torch.where(unfinished, next_token, policy.pad_id)
            logps[where, step] = torch.where(unfinished, chosen, 0.0)
            ended = unfinished & (next_token == policy.eos_id)
            lengths[where] = torch.where(ended, step + 1, lengths[where])
            unfinished = unfinished & ~ended
            remaining = int(unfinished.sum())
            if step + 1 == o.max_new_tokens or remaining == 0:
                break
            if remaining * 2 <= unfinished.numel() and unfinished.numel() > 1:
                keep = unfinished.nonzero().squeeze(-1)  # compact: finished rows stop costing compute
                cache.select_rows(keep)
                key_valid, position, next_token = key_valid[keep], position[keep], next_token[keep]
                active = keep if active is None else active[keep]
                unfinished = unfinished[keep]
            position = position + 1
            slot = length + step
            key_valid[:, slot] = True
            out = d.forward(embed(next_token[:, None]).to(dtype), table[position], cache, slot, key_valid[:, None, None, : slot + 1])
            last = out[:, -1]
        width = int(lengths.max())
        completion_ids = tokens[:, :width]
        completion_mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
        return {
            "prompt_ids": ids,
            "prompt_mask": mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "logp": logps[:, :width] * completion_mask,
            # the original's image prompt keeps the decoded CoT's leading space (prompt_quirks)
            "texts": policy.decode_text(completion_ids, completion_mask, strip=not o.prompt_quirks),
        }

    def _prefill_shared(
        self, hidden: torch.Tensor, rotary: torch.Tensor, mask: torch.Tensor, group_size: int, cache: _StaticCache
    ) -> torch.Tensor:
        """Run each semantic prompt ``hidden [B, P, H]`` once and write its keys and values into the
        cache slots ``[0, P)`` of its ``group_size`` adjacent rows of ``cache``; returns the last
        position's normed states ``[B*G, H]``.

        The G CoTs of a prompt start from the same prompt, so its prefill is done once instead of G
        times (the demo's ~105-token prompt, G = 8: 8x fewer prefill tokens). Row by row the
        arithmetic is the one-sequence-per-row prefill's (tested equal).
        """
        d = self.decoder
        if group_size == 1:
            return d.forward(hidden, rotary, cache, 0, _prefill_mask(mask))[:, -1]
        length = hidden.shape[1]
        shared = d.new_cache(hidden.shape[0], length, cache.keys.dtype, hidden.device)
        out = d.forward(hidden, rotary, shared, 0, _prefill_mask(mask))
        for full, once in ((cache.keys, shared.keys), (cache.values, shared.values)):
            rows = full[:, :, :, :length].unflatten(1, (-1, group_size))  # [L, B, G, n_kv, P, d], a view
            rows.copy_(once.unsqueeze(2).expand_as(rows))  # no [L, B*G, ...] temporary
        return out[:, -1].repeat_interleave(group_size, dim=0)

    # ------------------------------------------------------------------ token level
    @torch.no_grad()
    def sample_images(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        rows_per_prompt: int,
        generators: list[torch.Generator] | None,
        on_images: Callable[[int, list[Image.Image]], None] | None = None,
        position_ids: torch.Tensor | None = None,
        uncond_mask: torch.Tensor | None = None,
        decode: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, list[Image.Image]]:
        """Image tokens ``[N, T]``, their sampling log-probs, and the decoded images, chunk by chunk.

        Args:
            prompt_ids, prompt_mask: ``[N, P]`` image prompts ending in ``<begin_of_image>`` in
                the last column (left-padded by default).
            rows_per_prompt: rows of each generator (``N = len(generators) * rows_per_prompt``).
            generators: one per prompt; ``None`` draws from the global RNG (or greedily).
            position_ids: ``[N, P]`` explicit positions (default: from the mask, 0 at the first
                real token); generated tokens continue from each row's last position.
            uncond_mask: ``[N, P]`` attention mask of the ``full`` unconditional rows (default:
                ``prompt_mask``; the original attends to every position).
            decode: also decode the images (``False``: tokens and log-probs only, no images).
        """
        o, policy = self.options, self.policy
        self._refresh()
        n_rows, length = prompt_ids.shape
        per_chunk = self.chunk_prompts(
            rows_per_prompt, length + policy.num_image_tokens, policy.generation_head.vision_head.out_features, o.guided
        )
        tokens, logps, images = [], [], []
        n_prompts = n_rows // rows_per_prompt if generators is None else len(generators)
        for first in range(0, n_prompts, per_chunk):
            rows = slice(first * rows_per_prompt, min(n_rows, (first + per_chunk) * rows_per_prompt))
            chunk_tokens, chunk_logp = self._image_chunk(
                prompt_ids[rows],
                prompt_mask[rows],
                rows_per_prompt,
                None if generators is None else generators[first : first + per_chunk],
                None if position_ids is None else position_ids[rows],
                None if uncond_mask is None else uncond_mask[rows],
            )
            pixels = (
                policy.decode_images(chunk_tokens, o.decode_micro_batch_size, truncate=o.prompt_quirks, dtype=o.decode_dtype)
                if decode
                else None
            )
            chunk_images = policy.to_pil(pixels) if decode else []
            if on_images is not None and decode:
                on_images(rows.start, chunk_images)
            tokens.append(chunk_tokens)
            logps.append(chunk_logp)
            images.extend(chunk_images)
        return torch.cat(tokens), torch.cat(logps), images

    def _image_chunk(self, ids, mask, rows_per_prompt, generators, position_ids, uncond_mask):
        o, policy, d = self.options, self.policy, self.decoder
        n_rows, length = ids.shape
        n_tokens = policy.num_image_tokens
        total = length + n_tokens
        positions = positions_from_mask(mask) if position_ids is None else position_ids
        split, offset = None, 0
        if o.guided and o.cfg_uncond == "short":
            # BOS + <begin_of_image> at the last two slots: the uncond rows attend from slot P - 2 on
            uncond = torch.full_like(ids, policy.pad_id)
            uncond[:, -2], uncond[:, -1] = policy.bos_id, ids[:, -1]
            u_mask = torch.zeros_like(mask)
            u_mask[:, -2:] = 1
            u_positions = positions_from_mask(u_mask)
            split, offset = n_rows, length - 2
        elif o.guided:
            uncond = unconditional_ids(ids, policy.bos_id, policy.boi_id, policy.pad_id)
            u_mask = mask if uncond_mask is None else uncond_mask
            u_positions = positions
        if o.guided:
            ids = torch.cat([ids, uncond])  # [2n, P]
            mask = torch.cat([mask, u_mask])
            positions = torch.cat([positions, u_positions])
        rows = ids.shape[0]
        device = ids.device
        embed = policy.language_model.get_input_embeddings()
        dtype = d.compute_dtype
        cache = d.new_cache(rows, total, dtype, device)
        key_valid = torch.zeros(rows, total, dtype=torch.bool, device=device)  # generated slots open per step
        key_valid[:, :length] = mask.bool()
        table = d.rotary_table(int(positions.max()) + n_tokens + 1, dtype, device)
        # the prefill runs once over every slot (short unconditional rows mask their pads); decode
        # steps then read the short rows' keys from slot P - 2 on only
        out = d.forward(embed(ids).to(dtype), table[positions], cache, 0, _prefill_mask(mask))
        last = out[:, -1]
        position = positions[:, -1:]
        image_tokens = torch.empty(n_rows, n_tokens, dtype=torch.long, device=device)
        image_logp = torch.empty(n_rows, n_tokens, dtype=torch.float32, device=device)
        greedy = o.image_temperature <= 0
        noise = None
        if not greedy and generators is not None:
            vocab = policy.generation_head.vision_head.out_features
            noise = GumbelNoise(generators, rows_per_prompt, vocab, n_tokens, device)
        step_fn = self._step_fn()
        slot_tensor = torch.zeros((), dtype=torch.long, device=device)
        head_dtype = _head_dtype(policy.generation_head)
        for step in range(n_tokens):
            logits = policy.generation_head(last.to(head_dtype))  # [rows, V_img]
            if o.guided:
                cond, uncond_logits = logits[:n_rows], logits[n_rows:]
                logits = uncond_logits + o.cfg_weight * (cond - uncond_logits)  # [n, V_img]
            logits = sampling_logits(logits, o.image_temperature, o.image_top_k, o.image_top_p)
            if noise is not None:
                next_token = (logits + noise(step)).argmax(-1)
            else:
                next_token = draw(logits, greedy, None, 1)
            image_tokens[:, step] = next_token
            image_logp[:, step] = logits.gather(-1, next_token[:, None]).squeeze(-1) - logits.logsumexp(-1)
            if step + 1 == n_tokens:
                break
            fed = torch.cat([next_token, next_token]) if o.guided else next_token
            hidden = policy.embed_image_tokens(fed[:, None]).to(dtype)  # [rows, 1, H]
            position = position + 1
            slot = length + step
            key_valid[:, slot] = True
            if step_fn is not None and split is None:
                slot_tensor.fill_(slot)
                out = step_fn(hidden, table[position], cache.keys, cache.values, slot_tensor, key_valid)
            else:
                out = d.forward(hidden, table[position], cache, slot, key_valid[:, None, None, : slot + 1], split, offset)
            last = out[:, -1]
        return image_tokens, image_logp


def generate(
    policy,
    prompts: Sequence[str],
    seeds: Sequence[int],
    options: SamplingOptions,
    **kwargs,
) -> Generation:
    """One-shot :meth:`GenerationEngine.generate` (callers that generate repeatedly keep an engine)."""
    return GenerationEngine(policy, options).generate(prompts, seeds, **kwargs)
