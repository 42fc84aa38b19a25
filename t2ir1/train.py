"""``run(cfg)``: instantiate everything from the composed config, fit, return the metrics."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from t2ir1.lit.checkpointing import AtomicCheckpointIO, ResumableData
from t2ir1.lit.loggers import finish_wandb
from t2ir1.lit.module import BiCoTGRPOModule
from t2ir1.policy.janus import check_lora
from t2ir1.presets import check_training_config
from t2ir1.validation import check_model_node, check_train_config

log = logging.getLogger(__name__)

# Intended, not a problem: frozen Janus parts and the reference stay in eval mode; records
# are passed through by the datamodule's and the module's identical batch-transfer hooks.
warnings.filterwarnings("ignore", message=r"Found .* module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in both")


def _instantiate_group(node: DictConfig | None) -> list:
    """Instantiate every enabled entry of a dict-of-configs group (loggers, callbacks)."""
    if not node:
        return []
    return [instantiate(child) for child in node.values() if child is not None and "_target_" in child]


def ema_callbacks(cfg: DictConfig) -> list:
    """The EMA callback when ``algo.ema.decay`` is set (t2ir1.lit.ema), else nothing."""
    from t2ir1.lit.ema import EMAWeights

    decay = OmegaConf.select(cfg, "algo.ema.decay", default=None)
    return [] if decay is None else [EMAWeights(decay)]


def build_module(cfg: DictConfig) -> BiCoTGRPOModule:
    return BiCoTGRPOModule(
        policy=instantiate(cfg.model),
        reward=instantiate(cfg.reward),
        settings=instantiate(cfg.algo),
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
        rollout=OmegaConf.to_container(cfg.rollout, resolve=True) if cfg.get("rollout") else None,
    )


def _checkpoint_plugins(cfg: DictConfig) -> dict:
    """Atomic checkpoint writes, unless the trainer config chooses its own plugins or DeepSpeed."""
    if cfg.trainer.get("plugins") or "deepspeed" in str(cfg.trainer.get("strategy", "")).lower():
        return {}
    return {"plugins": [AtomicCheckpointIO()]}


def _checked_ckpt_path(cfg: DictConfig) -> str | None:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and "://" in str(ckpt_path) and not cfg.get("allow_remote_checkpoints", False):
        raise ValueError(
            f"ckpt_path={ckpt_path}: remote checkpoints are refused (a downloaded file is untrusted). "
            "Copy it to a local path, or set allow_remote_checkpoints=true (still loaded weights-only)."
        )
    if ckpt_path and ckpt_path not in ("last", "hpc") and "://" not in str(ckpt_path):
        path = Path(str(ckpt_path)).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path}: no such checkpoint. A run writes them to "
                "<output_dir>/checkpoints/ (last.ckpt and step-numbered files); pass one of those."
            )
        return str(path)
    return ckpt_path


def prompt_tokenizer(model_node: DictConfig):
    """The policy's tokenizer alone (no weights loaded), to count prompt tokens when data loads."""
    from transformers import AutoTokenizer

    node = OmegaConf.to_container(model_node, resolve=True)
    target = node["_target_"]
    if target == "t2ir1.policy.tiny.load_tiny_policy":
        from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint

        spec = {k: tuple(v) if isinstance(v, list) else v for k, v in (node.get("spec") or {}).items()}
        directory = tiny_checkpoint(node["cache_dir"], TinyJanusSpec(**spec))
    elif target == "t2ir1.testing.real_size.random_janus_policy":
        import tempfile

        from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint

        # random real-size weights with the tiny tokenizer (t2ir1.testing.real_size)
        directory = tiny_checkpoint(tempfile.gettempdir() + "/t2ir1-real-size", TinyJanusSpec())
    elif target == "t2ir1.shapeworld.load_policy":
        from t2ir1.shapeworld import checkpoint_path

        directory = node.get("name_or_path") or checkpoint_path()
    else:
        directory = node["name_or_path"]
    offline = {"local_files_only": True} if node.get("local_files_only") else {}
    return AutoTokenizer.from_pretrained(str(directory), **offline)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the last logged value of every metric."""
    # every knob and the model node are checked before anything loads
    check_train_config(cfg)
    check_model_node(cfg.model, "train.py model config")
    check_lora(OmegaConf.to_container(cfg.model.lora, resolve=True) if cfg.model.get("lora") else None)
    ema_callbacks(cfg)  # algo.ema.decay is checked here, before anything loads
    check_training_config(cfg)  # real model under an offline preset; bf16 weights without an fp32 master copy
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = _checked_ckpt_path(cfg)
    # the training loader becomes stateful, so a resumed run continues at the same batch; it
    # serves each batch num_iterations times (several updates per rollout)
    datamodule = ResumableData(instantiate(cfg.data), repeats=cfg.algo.get("num_iterations", 1))
    if getattr(datamodule.inner, "max_prompt_tokens", None) is not None:
        # data.max_prompt_tokens is applied when the prompts load, counted with the policy's own tokenizer
        datamodule.inner.prompt_tokenizer = prompt_tokenizer(cfg.model)
    module = build_module(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=_instantiate_group(cfg.get("callbacks")) + ema_callbacks(cfg),
        logger=_instantiate_group(cfg.get("logger")) or False,
        **_checkpoint_plugins(cfg),
    )
    exit_code = 1
    try:
        if trainer.is_global_zero:
            log.info("output directory: %s", cfg.paths.output_dir)
            for logger in trainer.loggers:
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        exit_code = 0
    except SIGTERMException:
        # Lightning's SIGTERMException is a SystemExit with status 0: a scheduler would think the run finished
        exit_code = int(cfg.get("preemption_exit_code", 143))
        saved = [c.saved_path for c in trainer.callbacks if getattr(c, "saved_path", None) is not None]
        resume = f"ckpt_path={saved[0]}" if saved else f"ckpt_path=<the newest checkpoint in {cfg.paths.output_dir}/checkpoints>"
        log.warning(
            "preempted (SIGTERM) at step %d; exiting with status %d. Resume with the same overrides plus %s "
            "(and hydra.run.dir=%s to keep metrics.csv in one folder)",
            trainer.global_step, exit_code, resume, cfg.paths.output_dir,
        )
        raise SystemExit(exit_code) from None
    except RuntimeError as error:
        if ckpt_path and "loading state_dict" in str(error):
            # a checkpoint of another model size or layout: Lightning's message does not name the file
            raise RuntimeError(
                f"ckpt_path={ckpt_path} does not fit this model ({str(error).splitlines()[0]} ...). It was written "
                "by a run with another model config; resume with that run's model settings (its .hydra/config.yaml) "
                "or start fresh with ckpt_path=null."
            ) from error
        raise
    finally:
        # every job of a multirun gets its own W&B run, finished even when the job fails
        finish_wandb(trainer.loggers, exit_code)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    log.info("final metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics
