"""The algorithm's settings: every knob of BiCoT-GRPO, checked on construction (REFERENCE §2).

``conf/algo/*.yaml`` targets :class:`GRPOSettings` here; run configs saved before it moved
name ``t2ir1.lit.module.GRPOSettings``, which stays importable (an alias) so they keep loading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from t2ir1.policy import run_card
from t2ir1.policy.logprobs import LOGPROB_CHUNK_LOGITS
from t2ir1.policy.prompts import SYSTEM_PROMPT
from t2ir1.rollout.engine import SamplingOptions

LEVELS = ("semantic", "token")
TOKEN_NORMALIZERS = ("global", "local")


@dataclass
class GRPOSettings:
    """Every knob of BiCoT-GRPO; defaults are the paper's (REFERENCE §2)."""

    group_size: int = 8
    new_generations_image: int = 1
    beta: float = 0.01
    levels: Sequence[str] = ("semantic", "token")
    # sample a semantic CoT before the image (None: exactly when the semantic level is trained);
    # True with levels ("token",) is the paper's "token only" ablation: CoT sampled, not trained
    use_cot: bool | None = None
    num_iterations: int = 1
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    loss_aggregation: str = "token_mean"
    token_normalizer: str = "global"
    adv_eps: float = 1e-4
    adv_scale: bool = True
    max_new_tokens: int = 1024
    text_temperature: float = 1.0
    text_top_k: int = 0
    text_top_p: float = 1.0
    image_temperature: float = 1.0
    image_top_k: int = 0
    image_top_p: float = 1.0
    # score the sampled tokens (policy, reference, old policy) at the sampling temperatures, as TRL's and
    # verl's GRPO do; False: at temperature 1 whatever the sampler used, as the original (identical at 1)
    tempered_logprobs: bool = False
    cfg_weight: float = 5.0
    cfg_uncond: str = "full"
    # the original's image-prompt layout and uint8 truncation (t2ir1.rollout.image_prompts)
    prompt_quirks: bool = False
    # the original's reference forward reads the policy's text embeddings (ReferenceModel)
    reference_reads_policy_embeddings: bool = False
    reasoning_prompt: str | None = "default"
    system_prompt: str = SYSTEM_PROMPT
    logprob_chunk_logits: int = LOGPROB_CHUNK_LOGITS
    decode_micro_batch_size: int = 16
    seed: int = 0
    # dynamic sampling (DAPO): drop zero-std groups, refill from the data stream (t2ir1.rollout.dynamic_sampling)
    filter_groups: bool = False
    # most generation rounds per batch with filter_groups, the first included (0 = no bound)
    max_gen_rounds: int = 10
    # sampling settings to evaluate with where they differ from training (the checkpoint's run card)
    eval_sampling: Mapping[str, Any] = field(default_factory=dict)
    # EMA of the trained weights ({decay}); t2ir1.train adds the t2ir1.lit.ema.EMAWeights callback
    ema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.levels = tuple(self.levels)
        self.eval_sampling = run_card.check_sampling_keys(self.eval_sampling, "algo.eval_sampling")
        unknown = [lvl for lvl in self.levels if lvl not in LEVELS]
        if unknown or not self.levels:
            raise ValueError(f"algo.levels={list(self.levels)} must be a non-empty subset of {list(LEVELS)}")
        if self.use_cot is False and "semantic" in self.levels:
            raise ValueError(
                f"algo.use_cot=false contradicts algo.levels={list(self.levels)}: the semantic level trains the "
                "sampled CoT. Set algo.use_cot=null (CoT when the semantic level is trained) or algo.levels=[token]"
            )
        if self.group_size * self.new_generations_image < 2:
            raise ValueError(
                "algo.group_size * algo.new_generations_image must be >= 2: group-normalised advantages "
                "need at least two samples per prompt"
            )
        if self.num_iterations < 1:
            raise ValueError(f"algo.num_iterations must be >= 1, got {self.num_iterations}")
        if self.max_gen_rounds < 0:
            raise ValueError(
                f"algo.max_gen_rounds must be >= 0 (generation rounds per batch, 0 = no bound), got {self.max_gen_rounds}"
            )
        if self.tempered_logprobs and min(self.text_temperature, self.image_temperature) <= 0:
            raise ValueError(
                "algo.tempered_logprobs=true scores tokens at the sampling temperatures, which must then be > 0 "
                f"(text_temperature={self.text_temperature}, image_temperature={self.image_temperature}); "
                "greedy decoding has no distribution to score: set tempered_logprobs=false or a temperature > 0"
            )
        if self.token_normalizer not in TOKEN_NORMALIZERS:
            raise ValueError(
                f"algo.token_normalizer={self.token_normalizer!r} is unknown; use global (the normaliser of the "
                "whole optimiser step over ranks and micro-batches) or local (each rank's micro-batch, the original)"
            )

    def sampling_options(self, rollout: dict | None = None) -> SamplingOptions:
        """The engine's options: this algorithm's sampling settings + the ``rollout`` node's
        performance settings (``compile``, ``chunk_rows``, ``memory_budget_gib``)."""
        return SamplingOptions(
            max_new_tokens=self.max_new_tokens,
            text_temperature=self.text_temperature,
            text_top_k=self.text_top_k,
            text_top_p=self.text_top_p,
            image_temperature=self.image_temperature,
            image_top_k=self.image_top_k,
            image_top_p=self.image_top_p,
            cfg_weight=self.cfg_weight,
            cfg_uncond=self.cfg_uncond,
            decode_micro_batch_size=self.decode_micro_batch_size,
            prompt_quirks=self.prompt_quirks,
            **dict(rollout or {}),
        )

    @property
    def logprob_temperatures(self) -> tuple[float, float]:
        """(text, image) temperatures the training passes score tokens at (``tempered_logprobs``)."""
        return (self.text_temperature, self.image_temperature) if self.tempered_logprobs else (1.0, 1.0)

    @property
    def samples_per_prompt(self) -> int:
        return self.group_size * self.new_generations_image

    @property
    def uses_semantic_cot(self) -> bool:
        """Whether rollouts sample a semantic CoT (``use_cot``, else whether the semantic level is trained)."""
        return "semantic" in self.levels if self.use_cot is None else bool(self.use_cot)
