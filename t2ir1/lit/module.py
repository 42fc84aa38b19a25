"""The LightningModule: orchestration of one BiCoT-GRPO step, no formula of its own.

rollout (rollout.engine: semantic CoT -> CFG image tokens -> decode) -> score (rewards)
-> advantages (algos.advantages) -> fixed log-probs (policy/reference ``sequence_logprobs``)
-> loss (algos.losses). Each phase returns its values; :meth:`BiCoTGRPOModule.step_record`
gathers them into a :class:`StepRecord`, which ``training_step`` returns to the callbacks
(``on_train_batch_end(outputs["record"], ...)``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from PIL import Image

from t2ir1.algos.advantages import group_normalized, group_stats
from t2ir1.algos.losses import bicot_grpo_loss
from t2ir1.algos.settings import LEVELS, TOKEN_NORMALIZERS, GRPOSettings  # noqa: F401  (old target path of saved run configs)
from t2ir1.data.records import PromptRecord
from t2ir1.policy import run_card
from t2ir1.policy.janus import JanusPolicy, ReferenceModel
from t2ir1.policy.prompts import load_reasoning_prompt
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.overlap import scorer_for
from t2ir1.rollout.dynamic_sampling import FilterStats, fill_informative_groups
from t2ir1.rollout.engine import Generation, GenerationEngine
from t2ir1.rollout.sampling import prompt_seed  # noqa: F401  (re-exported: saved code imports it from here)
from t2ir1.scale.metrics import nanmean_with_count, pooled_std, weighted_means
from t2ir1.scale.normalizer import gradient_correction, scale_gradients

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Rollout:
    """One batch's generation: rows ``[N = B * G * k]`` grouped per prompt."""

    records: list[PromptRecord]  # one per row
    generation: Generation
    # scored while generating (reward.async=true), else None: :meth:`BiCoTGRPOModule.score` scores it
    rewards: RewardOutput | None = None
    timings: dict[str, float] = field(default_factory=dict)
    filtering: FilterStats | None = None  # what dynamic sampling did (algo.filter_groups)
    # algo.filter_groups: the first generation round's rewards, every group as served (dropped ones too)
    served_rewards: RewardOutput | None = None

    @property
    def cots(self) -> list[str | None]:
        return self.generation.cots

    @property
    def images(self) -> list[Image.Image]:
        return self.generation.images

    @property
    def image_tokens(self) -> torch.Tensor:
        return self.generation.image_tokens

    @property
    def semantic(self) -> Generation | None:
        """The generation when it sampled a semantic CoT (``B * G`` text rows), else None."""
        return self.generation if self.generation.has_cot else None


@dataclass(frozen=True)
class StepRecord:
    """What one rollout yields for its updates: the phases' results, never written after creation.

    ``training_step`` returns it as ``outputs["record"]``; callbacks read it in
    ``on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)``.
    """

    rollout: Rollout
    rewards: RewardOutput
    advantages: torch.Tensor  # [N]
    old_logp: torch.Tensor | None = None  # [N, C + T_img]; None when num_iterations == 1 (ratio 1)
    ref_logp: torch.Tensor | None = None  # [N, C + T_img]; None without a reference (beta = 0)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (rollout_*, reward, ref_logprobs)

    @property
    def records(self) -> list[PromptRecord]:
        return self.rollout.records

    @property
    def generation(self) -> Generation:
        return self.rollout.generation

    @property
    def cots(self) -> list[str | None]:
        return self.rollout.cots

    @property
    def images(self) -> list[Image.Image]:
        return self.rollout.images

    @property
    def image_tokens(self) -> torch.Tensor:
        return self.rollout.image_tokens

    @property
    def semantic(self) -> Generation | None:
        return self.rollout.semantic

    @property
    def served_rewards(self) -> RewardOutput:
        """The rewards of the batch as served: under ``algo.filter_groups`` every group of the first
        generation round, the dropped ones included (the policy's reward, where :attr:`rewards` holds
        only the groups trained on, whose mean filtering biases); else :attr:`rewards`."""
        served = self.rollout.served_rewards
        return self.rewards if served is None else served


def _clock() -> float:
    """Seconds of a monotonic clock, read once queued CUDA work has finished (kernels run
    asynchronously: without the synchronisation a phase's time lands in a later phase)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


@contextmanager
def _timed(timings: dict[str, float], key: str):
    start = _clock()
    yield
    timings[key] = timings.get(key, 0.0) + _clock() - start


REFERENCE_PREFIX = "reference."


def _drop_reference_state(module, state_dict, prefix, local_metadata) -> None:
    """``state_dict`` post-hook: no ``reference.*`` tensors (the frozen copy of the base model)."""
    for key in [k for k in state_dict if k.startswith(prefix + REFERENCE_PREFIX)]:
        del state_dict[key]


def _reference_not_missing(module, incompatible_keys) -> None:
    """``load_state_dict`` post-hook: a checkpoint without the reference is complete."""
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not key.startswith(REFERENCE_PREFIX)]


class BiCoTGRPOModule(L.LightningModule):
    """BiCoT-GRPO on a Janus policy.

    Args:
        policy: a ``JanusPolicy`` or a zero-argument factory (Hydra partial) building one in
            ``configure_model`` (so that strategies can build it on the right device).
        reward: an object with ``setup(device)`` and ``__call__(records, images) -> RewardOutput``
            (normally a ``RewardEnsemble``).
        settings: :class:`GRPOSettings`.
        optimizer: factory ``params -> torch.optim.Optimizer`` (Hydra partial of AdamW).
    """

    def __init__(
        self,
        policy: JanusPolicy | Callable[[], JanusPolicy],
        reward,
        settings: GRPOSettings,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., object] | None = None,
        rollout: dict | None = None,
    ):
        super().__init__()
        self._policy_factory = None if isinstance(policy, JanusPolicy) else policy
        self.policy: JanusPolicy | None = policy if isinstance(policy, JanusPolicy) else None
        self.reference: ReferenceModel | None = None
        self.reward = reward
        self.settings = settings
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.reasoning_template = load_reasoning_prompt(settings.reasoning_prompt)
        # the generation engine's options (checked here, before any model loads)
        self.sampling = settings.sampling_options(rollout)
        self.engine: GenerationEngine | None = None
        # rollouts of batches whose repeats are still to come (num_iterations > 1), by batch identity
        self._pending_rollouts: dict[object, StepRecord] = {}
        self._reward_ready = False
        self._warned_short_batch = False
        # loss normalisers of this optimiser step's micro-batches (token_normalizer=global)
        self._step_normalizer: torch.Tensor | None = None
        # phase times of the micro-batch in flight, and the clocks its hooks started
        self._step_timings: dict[str, float] = {}
        self._clocks: dict[str, float] = {}
        # the frozen reference is the base model: checkpoints leave it out, and a resumed run
        # keeps the one configure_model rebuilt from the base weights
        self.register_state_dict_post_hook(_drop_reference_state)
        self.register_load_state_dict_post_hook(_reference_not_missing)

    # ------------------------------------------------------------------ setup
    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = self._policy_factory()
        self.policy.freeze_non_trainable()
        if self.settings.beta > 0 and self.reference is None:
            self.reference = self.policy.make_reference(self.settings.reference_reads_policy_embeddings)
        # sharding strategies (t2ir1.scale.fsdp.FSDP2Strategy) shard policy and reference here
        shard = getattr(self._trainer.strategy, "shard_policy", None) if self._trainer is not None else None
        if shard is not None:
            shard(self.policy, self.reference)
        if self.engine is None or self.engine.policy is not self.policy:
            self.engine = GenerationEngine(self.policy, self.sampling)

    def setup(self, stage: str) -> None:
        self.configure_model()

    def on_fit_start(self) -> None:
        self._setup_reward()

    def _setup_reward(self) -> None:
        if not self._reward_ready:
            self.reward.setup(self.device)
            self._reward_ready = True

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.policy.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "step"}}

    # ---------------------------------------------------------------- phases
    @torch.no_grad()
    def rollout(self, records: Sequence[PromptRecord], step: int) -> Rollout:
        """Sample CoTs and images for ``records`` through the generation engine: ``B * G * k`` rows.

        With ``reward.async=true`` each decoded chunk is scored on a worker thread while the next
        chunk is generated (``t2ir1.rewards.overlap``); the rollout then carries its rewards.
        """
        s, timings = self.settings, {}
        row_records = [r for r in records for _ in range(s.samples_per_prompt)]
        scorer = scorer_for(self.reward, row_records)
        with _timed(timings, "rollout"):
            generation = self.engine.generate(
                [r.prompt for r in records],
                [prompt_seed(s.seed, step, r.prompt_id or r.prompt) for r in records],
                group_size=s.group_size,
                images_per_cot=s.new_generations_image,
                use_cot=s.uses_semantic_cot,
                reasoning_template=self.reasoning_template,
                system_prompt=s.system_prompt,
                on_images=None if scorer is None else scorer.on_images,
            )
        timings.update({f"rollout_{phase}": seconds for phase, seconds in generation.timings.items()})
        rewards = None
        if scorer is not None:
            with _timed(timings, "reward"):  # only the part generation did not hide
                rewards = scorer.collect()
        return Rollout(row_records, generation, rewards=rewards, timings=timings)

    @torch.no_grad()
    def score(self, rollout: Rollout) -> RewardOutput:
        """The rollout's rewards: those scored while generating (reward.async), else the ensemble's."""
        if rollout.rewards is not None:
            return rollout.rewards
        return self.reward(rollout.records, rollout.images)

    @torch.no_grad()
    def advantages(self, rewards: RewardOutput) -> torch.Tensor:
        """Group-normalised advantages ``[N]`` of ``rewards`` (``t2ir1.algos.advantages``)."""
        scores = rewards.scores.to(self.device, torch.float32)
        # unscorable samples (reward.nan_policy=drop) leave the baseline and get advantage 0
        valid = rewards.valid
        return group_normalized(
            scores,
            self.settings.samples_per_prompt,
            eps=self.settings.adv_eps,
            scale=self.settings.adv_scale,
            valid=None if valid is None else valid.to(self.device),
        )

    def sequence_logprobs(self, rollout: Rollout | StepRecord, model: JanusPolicy | ReferenceModel) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and mask ``[N, C + T_img]`` of the trained levels' tokens under ``model``
        (the policy or the reference: one contract, ``sequence_logprobs(generation, ...)``)."""
        s = self.settings
        return model.sequence_logprobs(
            rollout.generation,
            s.levels,
            images_per_cot=s.new_generations_image,
            chunk_logits=s.logprob_chunk_logits,
            temperatures=s.logprob_temperatures,
        )

    def logp_gaps(self, rollout: Rollout, logp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean |rollout - replay| log-prob of the sampled tokens (on-policy check, DESIGN: log-prob contract).

        ``logp [N, C + T_img]`` are the training pass's log-probs (text tokens first). The image
        gap is NaN under CFG (``w != 1``): the engine then samples from the guided mixture, which
        the training pass does not replay by design (REFERENCE §2.6).
        """
        s, g = self.settings, rollout.generation
        nan = torch.tensor(float("nan"), device=logp.device)
        gaps = {"rollout/text_logp_diff": nan, "rollout/logp_diff": nan}
        text_width = 0
        if "semantic" in s.levels:
            k = s.new_generations_image
            mask = g.completion_mask.repeat_interleave(k, dim=0).bool()
            text_width = mask.shape[1]
            sampled = g.text_logp.repeat_interleave(k, dim=0).to(logp.device)
            gap = (logp[:, :text_width].detach().float() - sampled).abs()
            gaps["rollout/text_logp_diff"] = gap[mask].mean() if mask.any() else nan
        if "token" in s.levels and not self.sampling.guided:
            replay = logp[:, text_width:].detach().float()
            gaps["rollout/logp_diff"] = (replay - g.image_logp.to(logp.device)).abs().mean()
        return gaps

    @property
    def max_tokens_per_row(self) -> int:
        """Most tokens a row can hold: the trained levels' maximum lengths (Dr. GRPO's constant)."""
        total = self.settings.max_new_tokens if "semantic" in self.settings.levels else 0
        if "token" in self.settings.levels:
            total += self.policy.num_image_tokens
        return total

    @property
    def _global_normalizer(self) -> bool:
        """Normalise by the whole optimiser step's count; only inside a Trainer, whose optimiser
        step hook completes it (outside one, a batch is its own step: global equals local)."""
        return self.settings.token_normalizer == "global" and self._trainer is not None

    def update(self, record: StepRecord) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Policy log-probs and the loss of ``record``.

        ``token_normalizer=local`` (the original): the loss is this micro-batch's own aggregate
        (e.g. its token mean), so the optimiser step averages the per-rank, per-micro-batch means.
        ``token_normalizer=global``: the loss's gradient is the total divided by a constant
        (``max_tokens_per_row``); :meth:`on_before_optimizer_step` multiplies the accumulated
        gradients by ``constant * ranks * micro-batches / (sum of every rank's and micro-batch's
        normaliser)``, one all-reduce per optimiser step, before clipping. The result is the
        gradient of the aggregate over the whole step's rows, however they were split. The
        normaliser of the whole step cannot be known before the first micro-batch's backward
        (later micro-batches are not sampled yet), hence the correction after the last backward.
        The loss's *value* is this micro-batch's own aggregate either way (what is logged).
        """
        s = self.settings
        logp, mask = self.sequence_logprobs(record, self.policy)
        constant = float(self.max_tokens_per_row) if self._global_normalizer else None
        loss, diagnostics = bicot_grpo_loss(
            logp,
            record.old_logp,
            record.ref_logp,
            record.advantages,
            mask,
            beta=s.beta,
            clip_eps_low=s.clip_eps_low,
            clip_eps_high=s.clip_eps_high,
            aggregation=s.loss_aggregation,
            max_tokens_per_row=self.max_tokens_per_row,
            normalizer=constant,
        )
        own = diagnostics["normalizer"]
        if constant is not None:
            self._step_normalizer = own if self._step_normalizer is None else self._step_normalizer + own
            shown = (loss * constant / own).detach()
            diagnostics["pg_loss"] = diagnostics["pg_loss"] * constant / own
            loss = loss - loss.detach() + shown  # value: own aggregate; gradient: total / constant
        diagnostics["tokens"] = mask.detach().float().sum()
        diagnostics.update(self.logp_gaps(record, logp))
        return loss, diagnostics

    @torch.no_grad()
    def fixed_logprobs(self, rollout: Rollout) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Log-probs fixed for the whole rollout: ``(old_logp, ref_logp)``. The rollout policy's
        only when the rollout is reused for several updates (``num_iterations > 1``), the
        reference's only with a KL term (``beta > 0``)."""
        old_logp = ref_logp = None
        if self.reference is not None and self.settings.beta > 0:
            ref_logp, _ = self.sequence_logprobs(rollout, self.reference)
        if self.settings.num_iterations > 1:
            old_logp, _ = self.sequence_logprobs(rollout, self.policy)
        return old_logp, ref_logp

    def step_record(self, rollout: Rollout, rewards: RewardOutput | None = None) -> StepRecord:
        """Score ``rollout`` (unless ``rewards`` are given), normalise, fix its log-probs: every
        phase timed (``timing/reward``, ``timing/ref_logprobs``)."""
        timings = dict(rollout.timings)
        if rewards is None:
            if rollout.rewards is None:  # not already scored while generating (reward.async)
                with _timed(timings, "reward"):
                    rewards = self.score(rollout)
            else:
                rewards = rollout.rewards
        advantages = self.advantages(rewards)
        with _timed(timings, "ref_logprobs"):
            old_logp, ref_logp = self.fixed_logprobs(rollout)
        return StepRecord(rollout, rewards, advantages, old_logp=old_logp, ref_logp=ref_logp, timings=timings)

    # ----------------------------------------------------------- lightning loop
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Records hold text and metadata, no tensors (Lightning's default transfer would also
        # fail on frozen dataclasses); the policy tokenises prompts onto its own device.
        return batch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        run_card.add_to_checkpoint(checkpoint, self.settings, self.reasoning_template)  # prompts travel with the weights

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # rollouts awaiting repeats are not saved: a run resumed inside a num_iterations cycle
        # samples the repeated batch afresh (checkpoints at cycle boundaries resume exactly)
        self._pending_rollouts.clear()

    def _sampling_step(self) -> int:
        """The step that seeds sampling: the optimiser step, so that a prompt's samples do not
        depend on the rank or the micro-batch that draws it (0 outside a Trainer)."""
        return self.trainer.global_step if self._trainer is not None else 0

    def rollout_for(self, batch: list[PromptRecord]) -> tuple[StepRecord, bool]:
        """The step record of ``batch``'s rollout and whether it was sampled now.

        A batch is sampled, scored and given its fixed log-probs on its first serving. The data
        loader serves each batch ``num_iterations`` times (``t2ir1.data.repeat``: a
        ``RepeatedBatch`` knows its identity and repeat index); its repeats reuse the rollout
        kept under the batch's identity, which is dropped after the last repeat.
        """
        repeats = self.settings.num_iterations
        identity, repeat = getattr(batch, "identity", None), getattr(batch, "repeat", None)
        if repeats > 1 and (identity is None or getattr(batch, "repeats", None) != repeats):
            raise ValueError(
                f"algo.num_iterations={repeats} needs the training loader to serve every batch {repeats} times "
                f"(got a {type(batch).__name__} that is not a RepeatedBatch of {repeats}); train through "
                "t2ir1.train.run, or wrap the datamodule in t2ir1.lit.checkpointing.ResumableData(dm, repeats=...)"
            )
        record = self._pending_rollouts.get(identity) if repeat else None
        fresh = record is None
        if fresh:
            rollout = self.rollout(batch, step=self._sampling_step())
            if self.settings.filter_groups:
                rollout = self.keep_informative_groups(rollout)
            record = self.step_record(rollout)
        if identity is not None:
            if repeat + 1 < repeats:
                self._pending_rollouts[identity] = record
            else:
                self._pending_rollouts.pop(identity, None)
        return record, fresh

    def _scored(self, rollout: Rollout) -> Rollout:
        """``rollout`` with its rewards (scored now unless scored while generating), timed as ``reward``."""
        if rollout.rewards is not None:
            return rollout
        timings = dict(rollout.timings)
        with _timed(timings, "reward"):
            rewards = self.score(rollout)
        return dataclasses.replace(rollout, rewards=rewards, timings=timings)

    def keep_informative_groups(self, rollout: Rollout) -> Rollout:
        """Dynamic sampling (``algo.filter_groups``): drop zero-std groups, refill with the next
        prompts of the training stream for up to ``algo.max_gen_rounds`` rounds
        (``t2ir1.rollout.dynamic_sampling``); warns once when a batch stays short."""
        step = self._sampling_step()
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        next_prompts = getattr(loader, "next_refill", lambda: None)

        def sample(records: list[PromptRecord]) -> Rollout:
            return self._scored(self.rollout(records, step=step))

        def any_rank_short(short: int) -> int:
            return int(self._all_reduce_sum(torch.tensor(float(max(short, 0)), device=self.device)).item())

        served = self._scored(rollout)
        kept, stats = fill_informative_groups(
            served, sample, next_prompts, self.settings.samples_per_prompt, self.settings.max_gen_rounds,
            self.policy.pad_id, any_rank_short,
        )
        if stats.bound_reached and not self._warned_short_batch:
            self._warned_short_batch = True
            groups = len(rollout.records) // self.settings.samples_per_prompt
            if self.settings.max_gen_rounds == 1:  # no refill asked for: nothing to fix
                log.info(
                    "algo.filter_groups with algo.max_gen_rounds=1: zero-variance groups are dropped without refilling, "
                    "so a batch trains on its informative groups only (this one: %d of %d; logged as filter/groups_kept)",
                    stats.groups_kept, groups,
                )
            else:
                log.warning(
                    "algo.filter_groups: a batch kept %d of %d informative groups after %d generation rounds "
                    "(algo.max_gen_rounds=%d reached, the epoch's prompts ran out, or the training loader cannot refill: "
                    "train through t2ir1.train.run / t2ir1.lit.checkpointing.ResumableData); it trains on those (logged as "
                    "filter/bound_reached). Raise algo.max_gen_rounds or check that the reward separates samples. "
                    "Warned once.",
                    stats.groups_kept, groups, stats.rounds,
                    self.settings.max_gen_rounds,
                )
        return dataclasses.replace(kept, filtering=stats, served_rewards=served.rewards)

    def training_step(self, batch: list[PromptRecord], batch_idx: int) -> dict[str, Any]:
        """The loss, and the step record for the callbacks (``outputs["record"]`` in ``on_train_batch_end``)."""
        record, fresh = self.rollout_for(batch)
        if fresh:
            self._step_timings.update(record.timings)
        with _timed(self._step_timings, "update"):
            loss, diagnostics = self.update(record)
        self._log_step(record, loss, diagnostics, batch_size=len(batch))
        return {"loss": loss, "record": record}

    # ------------------------------------------------------- step timing, normaliser
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._step_timings = {}
        self._clocks = {"step": _clock()}

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._clocks["backward"] = _clock()

    def on_after_backward(self) -> None:
        if "backward" in self._clocks:
            self._step_timings["backward"] = _clock() - self._clocks.pop("backward")

    def on_before_optimizer_step(self, optimizer) -> None:
        self._clocks["optimizer"] = _clock()
        if self._step_normalizer is not None:
            factor = gradient_correction(
                self._step_normalizer,
                constant=float(self.max_tokens_per_row),
                replicas=self.trainer.world_size * max(1, self.trainer.accumulate_grad_batches),
                all_reduce_sum=self._all_reduce_sum,
            )
            scale_gradients((p for group in optimizer.param_groups for p in group["params"]), factor)
            self._step_normalizer = None

    def optimizer_step(self, *args, **kwargs) -> None:
        # the closure (training_step, backward) runs inside; the optimizer clock starts after it
        super().optimizer_step(*args, **kwargs)
        if "optimizer" in self._clocks:
            self._step_timings["optimizer"] = _clock() - self._clocks.pop("optimizer")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Log every phase of this micro-batch and its throughput. ``timing/optimizer`` (gradient
        correction, clipping, the optimiser step) appears on the micro-batch that stepped;
        ``timing/step`` runs from batch start to here, callbacks' batch-end work included."""
        now = _clock()
        rollout = outputs.get("record") if isinstance(outputs, Mapping) else None
        if "step" not in self._clocks or rollout is None:
            return
        step_seconds = now - self._clocks.pop("step")
        self._step_timings["step"] = step_seconds
        images = float(len(rollout.records))
        image_tokens = float(rollout.image_tokens.numel())
        rates = {"perf/images_per_s": images / step_seconds, "perf/image_tokens_per_s": image_tokens / step_seconds}
        if self._step_timings.get("rollout"):
            rates["perf/rollout_images_per_s"] = images / self._step_timings["rollout"]
            rates["perf/rollout_image_tokens_per_s"] = image_tokens / self._step_timings["rollout"]
        log_kw = {"on_step": True, "on_epoch": False, "batch_size": len(batch), "sync_dist": True}
        for phase, seconds in self._step_timings.items():
            self.log(f"timing/{phase}", seconds, reduce_fx="max", **log_kw)
        # throughput of all ranks together: each rank's rate, summed
        for key, rate in rates.items():
            self.log(key, rate, reduce_fx="sum", **log_kw)

    def _log_step(self, rollout: StepRecord, loss, diagnostics, batch_size: int) -> None:
        """Log this step's metrics as means over every rank's items (``t2ir1.scale.metrics``).

        Each rank's value goes with its weight (its loss denominator for the loss, tokens for
        token means, rows for row means, groups for group fractions, non-NaN rows for reward
        members) into one collective, so that the logged values equal those of one process
        holding all ranks' prompts. Timings are the slowest rank's.
        """
        device = loss.device
        rows = torch.tensor(float(len(rollout.records)), device=device)
        groups = rows / self.settings.samples_per_prompt
        tokens = diagnostics["tokens"]
        scores = rollout.rewards.scores.float()
        valid = rollout.rewards.valid
        advantages = rollout.advantages.detach().float()
        stats = group_stats(scores, self.settings.samples_per_prompt, valid=valid)
        pairs: dict[str, tuple] = {
            # each rank's loss with its normaliser: the loss of the union of the ranks' rows
            "train/loss": (loss.detach(), diagnostics["normalizer"]),
            "train/kl": (diagnostics["kl"], tokens),
            "train/clip_frac": (diagnostics["clip_frac"], tokens),
            "train/ratio_mean": (diagnostics["ratio_mean"], tokens),
            "adv/zero_std_frac": (stats["zero_std_frac"], groups),
            # unscorable samples (NaN, reward.nan_policy=drop) are left out, and counted
            "reward/total": nanmean_with_count(scores),
            "reward/valid_frac": (1.0 if valid is None else valid.float().mean(), rows),
            # first and second moments: the std over all ranks' rows is pooled from them
            "adv/mean": (advantages.mean(), rows),
            "adv/square_mean": (advantages.pow(2).mean(), rows),
        }
        for name, member_scores in rollout.rewards.extras.get("raw", {}).items():
            pairs[f"reward/{name}"] = nanmean_with_count(member_scores)
        for name, member_scores in rollout.rewards.extras.get("weighted", {}).items():
            pairs[f"reward/{name}_weighted"] = nanmean_with_count(member_scores)
        if rollout.rollout.served_rewards is not None:  # the reward before filtering (reward/total: the kept groups')
            pairs["reward/served"] = nanmean_with_count(rollout.served_rewards.scores.float())
        if rollout.semantic is not None:
            pairs["cot/semantic_len"] = (rollout.generation.completion_mask.sum(1).float().mean(), rows)
        means, weights = weighted_means(pairs, self._all_reduce_sum, device=device)
        means["adv/std"] = pooled_std(means.pop("adv/mean"), means.pop("adv/square_mean"), weights["adv/mean"])
        log_kw = {"on_step": True, "on_epoch": False, "batch_size": batch_size}
        filtering = rollout.rollout.filtering
        if filtering is not None:  # group counts summed over ranks, rounds the most of any rank
            for key, value in filtering.as_metrics().items():
                reduce = "max" if key in ("filter/rounds", "filter/bound_reached") else "sum"
                self.log(key, value, sync_dist=True, reduce_fx=reduce, **log_kw)
        for key, value in means.items():
            self.log(key, value, prog_bar=key == "reward/total", **log_kw)
        for key in ("rollout/logp_diff", "rollout/text_logp_diff"):
            self.log(key, diagnostics[key], sync_dist=True, **log_kw)

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (the identity on one process or outside a Trainer)."""
        if self._trainer is None:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")
