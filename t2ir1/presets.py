"""Guards on a composed training config: settings that would silently train something else.

Called once by :func:`t2ir1.train.run` before anything is built:

* an offline preset (``experiment=demo``, the default, and ``experiment=tiny``) marks itself with
  ``offline_preset``; combined with a real Janus checkpoint (``model=janus_pro_1b`` / ``janus_pro_7b``
  or any ``JanusPolicy.from_pretrained`` model) it would train the real model with the demo's CPU
  trainer, learning rate, CFG 1, time cap and ShapeWorld callback. That is refused with a message
  naming the presets to use;
* trained weights stored in bf16/fp16 with no fp32 master copy round most AdamW updates of a small
  learning rate away (bf16 keeps 8 significant bits: an update of 1e-6 on a weight of 1e-2 is lost).
  The run switches to fp32 master weights and says so: ``strategy.master_dtype`` under FSDP2, else
  ``model.dtype`` (the step still computes in bf16 under ``trainer.precision=bf16-mixed``).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from t2ir1.dtypes import LOW_PRECISION

log = logging.getLogger(__name__)

# The loader of real Janus checkpoints (hub ids, local folders, exports).
REAL_MODEL_TARGET = "t2ir1.policy.janus.JanusPolicy.from_pretrained"


class PresetError(ValueError):
    """A config combination that would silently train something other than what was asked."""


def _choice(group: str) -> str | None:
    """The Hydra choice of ``group`` in this run (None outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def check_offline_preset(cfg: DictConfig) -> None:
    """Refuse a real Janus checkpoint under an offline preset (demo, tiny), naming what to use instead."""
    preset = cfg.get("offline_preset")
    if not preset or cfg.model.get("_target_") != REAL_MODEL_TARGET:
        return
    model = _choice("model") or cfg.model.get("name_or_path")
    experiment = _choice("experiment") or preset
    raise PresetError(
        f"model={model} is a real Janus checkpoint but experiment={experiment} is the offline {preset} preset "
        f"(CPU trainer, its own learning rate, CFG weight, time cap and callbacks). Choose a real preset: "
        f"`python train.py experiment=t2i_r1 model={model}` (the paper's recipe, bugs fixed) or "
        f"`experiment=t2i_r1_paper` (the original exactly); or `~experiment` (no preset) to start from the bare "
        f"defaults plus your own overrides."
    )


def ensure_fp32_master_weights(cfg: DictConfig) -> None:
    """Switch low-precision trained weights without an fp32 master copy to fp32 master weights, with a warning."""
    model_dtype = cfg.model.get("dtype")
    strategy = cfg.trainer.get("strategy")
    has_master = isinstance(strategy, DictConfig) and "master_dtype" in strategy
    master = (strategy.master_dtype if has_master else None) or model_dtype
    if master not in LOW_PRECISION:
        return
    if has_master:
        strategy.master_dtype = "float32"
        where = "trainer.strategy.master_dtype=float32"
    else:
        cfg.model.dtype = "float32"
        where = f"model.dtype=float32 (the step still computes in trainer.precision={cfg.trainer.get('precision')})"
    log.warning(
        "model.dtype=%s with no fp32 master copy would step the trained weights in %s: AdamW updates at lr %s "
        "round away. Using fp32 master weights: %s. Set it yourself to silence this message.",
        model_dtype,
        master,
        cfg.get("optimizer", {}).get("lr"),
        where,
    )


def check_training_config(cfg: DictConfig) -> None:
    """Every guard, in order; mutates ``cfg`` only to switch to fp32 master weights."""
    check_offline_preset(cfg)
    ensure_fp32_master_weights(cfg)
