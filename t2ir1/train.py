"""``run(cfg)``: instantiate everything from the composed config, fit, return the metrics."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from t2ir1.lit.module import BiCoTGRPOModule

log = logging.getLogger(__name__)


def _instantiate_group(node: DictConfig | None) -> list:
    """Instantiate every enabled entry of a dict-of-configs group (loggers, callbacks)."""
    if not node:
        return []
    return [instantiate(child) for child in node.values() if child is not None and "_target_" in child]


def build_module(cfg: DictConfig) -> BiCoTGRPOModule:
    return BiCoTGRPOModule(
        policy=instantiate(cfg.model),
        reward=instantiate(cfg.reward),
        settings=instantiate(cfg.algo),
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
    )


def run(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the last logged value of every metric."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=_instantiate_group(cfg.get("callbacks")), logger=_instantiate_group(cfg.get("logger")) or False
    )
    if trainer.is_global_zero:
        log.info("output directory: %s", cfg.paths.output_dir)
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    log.info("final metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics
