"""Weights & Biases logging that needs no account: offline unless W&B is configured.

``mode: auto`` (the default) resolves, in this order:

1. ``WANDB_MODE`` set in the environment (``online``, ``offline``, ``disabled``; ``dryrun`` = offline);
2. ``online`` when W&B credentials exist: ``WANDB_API_KEY`` is set, or ``~/.netrc``
   (``NETRC`` if set) has an entry for the W&B host (what ``wandb login`` writes);
3. ``offline`` otherwise: the run is written under ``{output_dir}/wandb/offline-run-*``
   and can be uploaded later with ``wandb sync {output_dir}/wandb/offline-run-*``.

wandb is imported only when a W&B logger is built, so ``logger=csv`` runs without it.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_HOST = "api.wandb.ai"


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "")).hostname or DEFAULT_HOST


def has_wandb_credentials() -> bool:
    """True when ``WANDB_API_KEY`` is set or the netrc file holds a login for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    if not netrc_path.is_file():
        return False
    try:
        return netrc.netrc(netrc_path).authenticators(_wandb_host()) is not None
    except (netrc.NetrcParseError, OSError) as err:
        log.warning("could not read %s (%s); treating W&B as not configured", netrc_path, err)
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``online`` / ``offline`` / ``disabled`` for ``wandb.init(mode=...)`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        return "offline" if env_mode == "dryrun" else env_mode
    return "online" if has_wandb_credentials() else "offline"


def _hydra_multirun_info() -> tuple[str | None, int | None]:
    """(sweep directory, job number) when running inside a Hydra multirun, else (None, None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None, None
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return None, None
        return str(hydra_cfg.sweep.dir), int(hydra_cfg.job.num)
    except (ImportError, ValueError, AttributeError):
        return None, None


def multirun_group_name(sweep_dir: str) -> str:
    """``multirun/2026-11-23/09-30-57`` -> ``multirun-2026-11-23-09-30-57`` (one group per sweep)."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("/", ".", "..")]
    return "-".join(parts[-3:]) if parts else "multirun"


def wandb_logger(
    save_dir: str,
    project: str = "t2ir1",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    mode: str = "auto",
    job_type: str = "train",
    entity: str | None = None,
    log_model: bool | str = False,
    notes: str | None = None,
):
    """A Lightning ``WandbLogger`` writing under ``{save_dir}/wandb``.

    A Hydra multirun puts all its jobs in one group (``group`` when set, else one named
    after the sweep directory) and names each job's run ``{name}-{job number}``.
    """
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    sweep_dir, job_num = _hydra_multirun_info()
    if sweep_dir is not None:
        group = group or multirun_group_name(sweep_dir)
        name = f"{name or project}-{job_num}"
    if resolved != "online" and log_model:
        log.warning("W&B is %s: logger.wandb.log_model=%r ignored (checkpoints cannot be uploaded)", resolved, log_model)
        log_model = False
    directory = Path(save_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    log.info("W&B mode %s, files under %s", resolved, directory / "wandb")
    return WandbLogger(
        name=name,
        save_dir=str(directory),
        project=project,
        log_model=log_model,
        group=group,
        tags=list(tags or []),
        mode=resolved,
        job_type=job_type,
        entity=entity,
        notes=notes,
    )


def finish_wandb(loggers: Iterable, exit_code: int = 0) -> None:
    """Finish every W&B run started by ``loggers`` (each job of a multirun gets its own run).

    Safe to call when a logger never started its run or wandb is not installed.
    """
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is None or type(logger).__name__ != "WandbLogger":
            continue
        try:
            experiment.finish(exit_code=exit_code)
        except Exception as err:  # a failure to close must not hide the run's own error
            log.warning("could not finish the W&B run: %s", err)
        logger._experiment = None
