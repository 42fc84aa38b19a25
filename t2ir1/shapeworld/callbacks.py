"""Held-out ShapeWorld accuracy before and after training, and the reward curve.

:func:`heldout_accuracy` generates one image per held-out record the way the RL loop
does (semantic CoT, then CFG image tokens, both *sampled*, as GenEval samples its
images) from per-record generators seeded by ``(seed, prompt_id)`` only, so two
evaluations of different policies use the same random numbers (common random numbers:
the before/after difference is not blurred by sampling noise). Each image is read by the
exact :class:`~t2ir1.shapeworld.detector.ShapeDetector` and judged by
:func:`~t2ir1.shapeworld.reward.is_correct` (GenEval's "fully correct image"); a category
scores its fraction of correct images, ``overall`` is the mean over categories.

:class:`HeldoutAccuracyCallback` runs it at ``on_fit_start`` and ``on_fit_end``, logs the
before/after/delta table, and writes ``heldout_accuracy.json`` / ``.md``, captioned grids of
held-out samples, and ``curves.png`` (reward, KL and held-out accuracy over the reference
curves of :mod:`t2ir1.shapeworld.reference`) into ``out_dir``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from t2ir1.data.records import PromptRecord
from t2ir1.generate import generate_samples
from t2ir1.lit.callbacks import step_record
from t2ir1.lit.grid import captioned_grid
from t2ir1.policy.janus import JanusPolicy
from t2ir1.rollout.sampling import record_seed
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import CATEGORIES, HELDOUT_SEED, HELDOUT_SIZE, heldout_records
from t2ir1.shapeworld.reward import is_correct
from t2ir1.shapeworld.world import WORLD

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(
    policy: JanusPolicy,
    records: Sequence[PromptRecord],
    reasoning_template: str | None,
    system_prompt: str,
    seed: int = 0,
    batch_size: int = 48,
    **options,
) -> tuple[list, list[str | None]]:
    """One image (PIL) and CoT per record through the generation engine; ``reasoning_template=None``
    draws from the bare prompt. Record ``r`` samples with ``record_seed(seed, r.prompt_id)``, so
    ``eval.py benchmark=shapeworld`` with the same seed and settings draws the same images.

    ``options``: ``max_new_tokens``, temperatures, ``cfg_weight`` and any other engine option.
    """
    samples = generate_samples(
        policy,
        [r.prompt for r in records],
        n_per_prompt=1,
        use_cot=reasoning_template is not None,
        reasoning_template=reasoning_template,
        system_prompt=system_prompt,
        batch_size=batch_size,
        seeds=[record_seed(seed, r.prompt_id or r.prompt) for r in records],
        **options,
    )
    return [sample.image for sample in samples], [sample.cot for sample in samples]


def accuracy_table(records: Sequence[PromptRecord], correct: Sequence[bool]) -> dict[str, float]:
    """Fraction correct per category (those present) and ``overall`` = their mean (GenEval)."""
    table = {}
    for category in CATEGORIES:
        hits = [ok for r, ok in zip(records, correct, strict=True) if r.task_type == category]
        if hits:
            table[category] = float(np.mean(hits))
    table["overall"] = float(np.mean(list(table.values()))) if table else float("nan")
    return table


def heldout_accuracy(
    policy: JanusPolicy,
    records: Sequence[PromptRecord],
    reasoning_template: str | None,
    system_prompt: str,
    detector: ShapeDetector | None = None,
    **generation,
) -> dict:
    """Generate, detect and judge: ``{"table": {category: acc, "overall": acc}, "correct", "cots", "images"}``."""
    detector = detector or ShapeDetector(WORLD)
    images, cots = generate(policy, records, reasoning_template, system_prompt, **generation)
    detections = detector.detect(images)
    correct = [is_correct(r, d) for r, d in zip(records, detections, strict=True)]
    return {"table": accuracy_table(records, correct), "correct": correct, "cots": cots, "images": images}


def format_table(before: dict[str, float], after: dict[str, float] | None = None) -> str:
    """A markdown table of accuracies (percent), with after and delta columns when given."""
    keys = [k for k in (*CATEGORIES, "overall") if k in before]
    if after is None:
        lines = ["| category | accuracy |", "|---|---|"]
        lines += [f"| {k} | {100 * before[k]:.1f} |" for k in keys]
    else:
        lines = ["| category | before | after | delta |", "|---|---|---|---|"]
        lines += [
            f"| {k} | {100 * before[k]:.1f} | {100 * after[k]:.1f} | {100 * (after[k] - before[k]):+.1f} |"
            for k in keys
        ]
    return "\n".join(lines)


class HeldoutAccuracyCallback(L.Callback):
    """Held-out ShapeWorld accuracy at the start and end of ``fit``, plus the reward curve.

    Args:
        out_dir: where ``heldout_accuracy.json`` / ``.md``, the grids and ``curves.png`` go.
        num_prompts: held-out records (:func:`~t2ir1.shapeworld.prompts.heldout_records`, >= 200).
        heldout_seed: which held-out set (the training stream excludes the same one).
        seed: sampling seed (the same for before and after).
        use_cot: sample the semantic CoT first (as trained); False evaluates the bare prompt.
        max_new_tokens, text_temperature, image_temperature, cfg_weight: generation settings.
        batch_size: records generated at once.
        color_threshold, min_area, min_score: detector settings.
        grid_images: held-out samples shown in each grid (0: none).
        plot_window: steps per bin of the plotted reward and KL curves (without reference curves;
            with them, the reference's own bin).
        reference_curves: the demo's expected curves drawn under the run's in ``curves.png``, with
            an "on track" line per curve at the end: ``"shipped"`` (the package's
            ``t2ir1/shapeworld/reference_curves.json``), a path, or None (no reference).
        run_settings: the run's settings compared with the reference's (``group_size``,
            ``batch_size``, ``lr``, ...: :data:`t2ir1.shapeworld.reference.SETTINGS`); a difference
            is logged as a warning and named in the figure's title.
        every_n_steps: also evaluate every this many optimiser steps (0: only before and after);
            each result is logged as ``heldout/<category>`` and kept in the JSON's ``history``.
        use_ema: sample from the EMA weights (``algo.ema.decay`` set: the ``EMAWeights`` callback).
        verdict: the reward verdict (``RewardOutput.verdicts``, ``<member>/<verdict>``) whose mean
            over each step's samples is the JSON's ``train_correct``.
    """

    def __init__(
        self,
        out_dir: str = "heldout",
        num_prompts: int = HELDOUT_SIZE,
        heldout_seed: int = HELDOUT_SEED,
        seed: int = 0,
        use_cot: bool = True,
        max_new_tokens: int = 40,
        text_temperature: float = 1.0,
        image_temperature: float = 1.0,
        cfg_weight: float = 5.0,
        batch_size: int = 48,
        color_threshold: float = 60.0,
        min_area: int = 16,
        min_score: float = 0.5,
        grid_images: int = 24,
        plot_window: int = 20,
        every_n_steps: int = 0,
        use_ema: bool = False,
        verdict: str = "shapeworld/correct",
        reference_curves: str | None = None,
        run_settings: dict | None = None,
    ):
        if num_prompts < 1:
            raise ValueError(f"HeldoutAccuracyCallback: num_prompts must be >= 1, got {num_prompts}")
        if every_n_steps < 0:
            raise ValueError(f"HeldoutAccuracyCallback: every_n_steps must be >= 0, got {every_n_steps}")
        self.out_dir = Path(out_dir)
        self.verdict = verdict
        self.records = heldout_records(num_prompts, heldout_seed)
        self.seed = seed
        self.use_cot = use_cot
        self.generation = {
            "max_new_tokens": max_new_tokens,
            "text_temperature": text_temperature,
            "image_temperature": image_temperature,
            "cfg_weight": cfg_weight,
            "batch_size": batch_size,
        }
        self.detector = ShapeDetector(
            WORLD, color_threshold=color_threshold, min_area=min_area, min_score=min_score
        )
        self.grid_images = grid_images
        self.plot_window = plot_window
        self.every_n_steps = every_n_steps
        self.use_ema = use_ema
        self.history: list[dict] = []
        self.before: dict[str, float] | None = None
        self.after: dict[str, float] | None = None
        self.steps: list[int] = []
        self.rewards: list[float] = []
        self.train_correct: list[float] = []
        self.kls: list[float] = []
        self.run_settings = dict(run_settings or {})
        # loaded here, so that a missing or malformed file stops the run before training, not after
        self.reference = None
        if reference_curves is not None:
            from t2ir1.shapeworld.reference import SHIPPED, ReferenceCurves

            self.reference = ReferenceCurves.load(SHIPPED if reference_curves == "shipped" else reference_curves)

    def evaluate(self, pl_module, tag: str, files: bool = True) -> dict[str, float]:
        """Held-out accuracy table of ``pl_module.policy`` (``files``: also ``heldout_{tag}.png`` / ``.jsonl``)."""
        start = time.perf_counter()
        template = pl_module.reasoning_template if self.use_cot else None
        with self._weights(pl_module):
            result = heldout_accuracy(
                pl_module.policy,
                self.records,
                template,
                pl_module.settings.system_prompt,
                self.detector,
                seed=self.seed,
                **self.generation,
            )
        log.info(
            "held-out accuracy (%s, %d prompts, %.0fs): %.1f%% overall",
            tag, len(self.records), time.perf_counter() - start, 100 * result["table"]["overall"],
        )  # fmt: skip
        if not files:
            return result["table"]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.grid_images:
            count = min(self.grid_images, len(self.records))
            captions = [
                f"{r.prompt}\nCoT: {c if c is not None else '(none)'}\n{'correct' if ok else 'wrong'}"
                for r, c, ok in zip(self.records[:count], result["cots"], result["correct"], strict=False)
            ]
            captioned_grid(result["images"][:count], captions, columns=6, cell_size=160).save(
                self.out_dir / f"heldout_{tag}.png"
            )
        rows = [
            {"prompt_id": r.prompt_id, "prompt": r.prompt, "category": r.task_type, "cot": c, "correct": ok}
            for r, c, ok in zip(self.records, result["cots"], result["correct"], strict=True)
        ]
        with open(self.out_dir / f"heldout_{tag}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        return result["table"]

    def _weights(self, pl_module):
        """The EMA weights swapped into the policy (``use_ema``), else the policy as it is."""
        if not self.use_ema:
            return contextlib.nullcontext()
        from t2ir1.lit.ema import ema_callback

        ema = ema_callback(pl_module.trainer) if pl_module._trainer is not None else None
        if ema is None or ema.averaged is None:
            raise ValueError(
                "callbacks.heldout.use_ema=true but the run keeps no EMA: set algo.ema.decay (e.g. 0.99) or use_ema=false"
            )
        return ema.swapped_in(pl_module.policy)

    @staticmethod
    def _evaluates(trainer: L.Trainer, pl_module) -> bool:
        """Whether this rank runs the held-out generation: rank 0 (the policy is identical on every
        rank), and every rank when the policy is sharded (FSDP): each forward then gathers
        parameters from all ranks, so rank 0 alone would wait for the others forever."""
        from t2ir1.scale.fsdp import is_sharded

        return trainer.is_global_zero or is_sharded(pl_module.policy.lm_head)

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            if self._evaluates(trainer, pl_module):
                self.evaluate(pl_module, "before", files=False)
            return
        self.before = self.evaluate(pl_module, "before")
        self.history = [{"step": trainer.global_step, **self.before}]
        log.info("held-out accuracy before training (%%):\n%s", format_table(self.before))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rollout = step_record(outputs)
        if rollout is None:
            return
        self.steps.append(trainer.global_step)
        # the batch as served (under algo.filter_groups the dropped groups too: the policy's reward, not
        # the kept groups'); unscorable samples (reward.nan_policy=drop) are NaN: left out of the mean
        served = rollout.served_rewards
        self.rewards.append(float(served.scores.float().nanmean()))
        kl = trainer.callback_metrics.get("train/kl")
        self.kls.append(float(kl) if kl is not None else float("nan"))
        correct = served.verdicts.get(self.verdict)
        if correct is not None:
            self.train_correct.append(float(correct.float().mean()))
        step = trainer.global_step
        due = self.every_n_steps and step % self.every_n_steps == 0
        # the last step is the "after" evaluation; with gradient accumulation several micro-batches
        # end on one optimiser step, and only the first of them evaluates
        unlimited = trainer.max_steps is None or trainer.max_steps < 0
        fresh = not self.history or self.history[-1]["step"] != step
        if due and fresh and (unlimited or step < trainer.max_steps):
            # rank 0 evaluates and logs (every rank takes part when the policy is sharded)
            if not trainer.is_global_zero:
                if self._evaluates(trainer, pl_module):
                    self.evaluate(pl_module, f"step{step}", files=False)
                    self.history.append({"step": step})
            else:
                table = self.evaluate(pl_module, f"step{step}", files=False)
                self.history.append({"step": step, **table})
                pl_module.log_dict(
                    {f"heldout/{key}": value for key, value in table.items()}, rank_zero_only=True
                )

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            if self._evaluates(trainer, pl_module):
                self.evaluate(pl_module, "after", files=False)
            return
        self.after = self.evaluate(pl_module, "after")
        self.history.append({"step": trainer.global_step, **self.after})
        table = format_table(self.before, self.after) if self.before else format_table(self.after)
        log.info("held-out accuracy, %d prompts (%%):\n%s", len(self.records), table)
        summary = {
            "num_prompts": len(self.records),
            "seed": self.seed,
            "use_cot": self.use_cot,
            "generation": self.generation,
            "before": self.before,
            "after": self.after,
            "steps": self.steps,
            "rewards": self.rewards,
            "train_correct": self.train_correct,
            "kls": self.kls,
            "history": self.history,
        }
        (self.out_dir / "heldout_accuracy.json").write_text(
            json.dumps(summary, indent=2) + "\n", encoding="utf-8"
        )
        (self.out_dir / "heldout_accuracy.md").write_text(table + "\n", encoding="utf-8")
        self.plot_curves()

    def plot_curves(self) -> None:
        """``curves.png``: this run's reward, KL and held-out accuracy over the reference curves, and
        one log line per curve saying where the run ends relative to the reference's range."""
        from t2ir1.shapeworld import reference as ref

        evaluations = [row for row in self.history if "overall" in row]
        curves = ref.RunCurves(
            reward=(self.steps, self.rewards),
            kl=(self.steps, self.kls),
            heldout=([row["step"] for row in evaluations], [100 * row["overall"] for row in evaluations]),
        )
        reference, title = self.reference, ""
        if reference is not None:
            differences = reference.differences(self.run_settings)
            if differences:
                title = "reference from other settings: " + "; ".join(differences)
                log.warning("the reference curves come from other settings: %s", "; ".join(differences))
            for line in ref.on_track(curves, reference):
                log.info("on track? %s", line)
        ref.plot(curves, reference, self.out_dir / "curves.png", window=self.plot_window, title=title)
