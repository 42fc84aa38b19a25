"""Weights & Biases logging that needs no account: offline unless W&B is configured.

``mode: auto`` (the default) resolves, in this order:

1. ``WANDB_MODE`` set in the environment (``online``, ``offline``, ``disabled``; ``dryrun`` = offline);
2. ``online`` when W&B credentials exist: ``WANDB_API_KEY`` is set, or ``~/.netrc``
   (``NETRC`` if set) has an entry for the W&B host (what ``wandb login`` writes);
3. ``offline`` otherwise: the run is written under ``{output_dir}/wandb/offline-run-*``
   and can be uploaded later with ``wandb sync {output_dir}/wandb/offline-run-*``.

Beside W&B's private run log, each W&B run directory gets plain files (``t2ir1-run.json``:
identity, config, exit code; ``t2ir1-history.jsonl``: metrics and media paths per logging
call) that :func:`load_wandb_run` reads back.

wandb is imported only when a W&B logger is built, so ``logger=csv`` runs without it.
"""

from __future__ import annotations

import csv
import json
import logging
import netrc
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

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
    return FileMirroredWandbLogger(
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
        if experiment is None or not isinstance(logger, WandbLogger):
            continue
        if isinstance(logger, FileMirroredWandbLogger):
            logger.record_exit(exit_code)
        try:
            experiment.finish(exit_code=exit_code)
        except Exception as err:  # a failure to close must not hide the run's own error
            log.warning("could not finish the W&B run: %s", err)
        logger._experiment = None


# ----------------------------------------------------------------------------- metrics.csv
class HistoryKeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping an existing ``metrics.csv`` instead of deleting it.

    Rows already in the file stay. Rows at or after the first step this process logs are
    dropped once, at its first save: they were logged after the checkpoint a resumed run
    started from, and the resumed run logs those steps again.
    """

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                self._earlier = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])
            log.info("%s: keeping its %d earlier row(s)", self.metrics_file_path, len(self._earlier))

    def save(self) -> None:
        earlier, self._earlier = getattr(self, "_earlier", []), []
        if earlier and self.metrics:
            first_step = min(int(row["step"]) for row in self.metrics)
            kept = [row for row in earlier if row.get("step") in (None, "") or int(float(row["step"])) < first_step]
            if len(kept) < len(earlier):
                log.info(
                    "metrics.csv: %d row(s) from step %d on are replaced by the resumed run",
                    len(earlier) - len(kept),
                    first_step,
                )
            self._record_new_keys()
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` survives a resume into the same folder
    (Lightning's own writer deletes it); see :class:`HistoryKeepingWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> HistoryKeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment


# ----------------------------------------------------------------------------- W&B run files
# W&B's own run log (``run-*.wandb``) is a private binary format that changes with wandb's
# storage; each W&B run therefore also writes, beside it in its run directory, plain files that
# the notebook and the tests read: ``t2ir1-run.json`` (identity, config, exit code, files
# directory) and ``t2ir1-history.jsonl`` (one line per logging call: scalars, and media as the
# ``{"_type", "path"}`` W&B gives them, ``path`` relative to the files directory).
RUN_FILE = "t2ir1-run.json"
HISTORY_FILE = "t2ir1-history.jsonl"


def _plain(value):
    """A logged value as JSON: numbers as floats, W&B media as their public ``to_json`` (path), lists item-wise."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, (int, float)):
        return value
    return None


class FileMirroredWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that also writes the run's identity, config, exit code and
    logged metrics/media paths to plain files in the W&B run directory (see ``RUN_FILE``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mode = kwargs.get("mode")
        self._run_info: dict | None = None

    @property
    def experiment(self):
        run = WandbLogger.experiment.fget(self)
        if self._run_info is None and rank_zero_only.rank == 0 and isinstance(getattr(run, "dir", None), str):
            if self._mode != "disabled":
                self._run_info = {
                    "run_id": run.id,
                    "name": run.name or "",
                    "group": run.group or "",
                    "tags": list(run.tags or ()),
                    "mode": self._mode,
                    "files_dir": run.dir,
                    "config": {},
                    "exit_code": None,
                }
                self._write_run_info()
        return run

    @property
    def run_dir(self) -> Path | None:
        """The W&B run directory (``.../wandb/offline-run-*``), once the run has started."""
        return Path(self._run_info["files_dir"]).parent if self._run_info else None

    def _write_run_info(self) -> None:
        path = self.run_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._run_info, indent=1, default=str), encoding="utf-8")
        tmp.replace(path)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        super().log_hyperparams(params)
        if self._run_info is not None:
            self._run_info["config"] = json.loads(json.dumps(self.experiment.config.as_dict(), default=str))
            self._write_run_info()

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if self._run_info is None:
            return
        run = self.experiment
        row = {} if step is None else {"trainer/global_step": int(step)}
        for key, value in metrics.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            if items and all(hasattr(v, "to_json") for v in items):  # W&B media, already written by log()
                media = [v.to_json(run) for v in items]
                row[key] = [{"_type": m.get("_type"), "path": m.get("path")} for m in media]
            else:
                row[key] = _plain(value)
        with open(self.run_dir / HISTORY_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def record_exit(self, exit_code: int) -> None:
        """Write the exit code the run is finished with (called before ``finish``)."""
        if self._run_info is not None:
            self._run_info["exit_code"] = int(exit_code)
            self._write_run_info()


class WandbRunFilesError(ValueError):
    """A directory that is not a W&B run directory written by :class:`FileMirroredWandbLogger`."""


@dataclass
class WandbRun:
    """What a W&B run wrote beside its private log: identity, config, history, exit code."""

    directory: Path
    run_id: str
    name: str
    group: str
    tags: list[str]
    config: dict
    # one dict per logging call: scalars, and media as lists of {"_type", "path"}
    history: list[dict]
    # the code the run was finished with (None: never finished, e.g. killed)
    exit_code: int | None
    files_dir: Path

    def metric(self, key: str) -> list[tuple[int, float]]:
        """``[(trainer/global_step, value)]`` of a scalar metric."""
        return [
            (int(row.get("trainer/global_step", i)), float(row[key]))
            for i, row in enumerate(self.history)
            if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
        ]

    def media(self, key: str) -> list[Path]:
        """Absolute paths of the media files (images, tables) logged under ``key``, in order."""
        return [
            self.files_dir / item["path"]
            for row in self.history
            if isinstance(row.get(key), list)
            for item in row[key]
            if isinstance(item, dict) and item.get("path")
        ]


def find_wandb_runs(root: str | os.PathLike) -> list[Path]:
    """W&B run directories (``offline-run-*`` / ``run-*``) under ``root`` that hold run files, oldest first."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(RUN_FILE)}, key=lambda p: p.name)


def load_wandb_run(run_dir: str | os.PathLike) -> WandbRun:
    """Read the plain files a W&B run directory (``.../wandb/offline-run-*``) holds; no network, no account."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_FILE
    if not info_path.is_file():
        raise WandbRunFilesError(
            f"{run_dir} holds no {RUN_FILE}; pass a .../wandb/offline-run-* directory of a run logged with "
            "logger=default or logger=wandb (find_wandb_runs(<run>/wandb) lists them)"
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    history_path = run_dir / HISTORY_FILE
    history = []
    if history_path.is_file():
        with open(history_path, encoding="utf-8") as handle:
            history = [json.loads(line) for line in handle if line.strip()]
    files_dir = Path(info.get("files_dir") or run_dir / "files")
    if not files_dir.is_dir():  # the run directory was moved: its files folder moved with it
        files_dir = run_dir / "files"
    return WandbRun(
        run_dir, info["run_id"], info["name"], info["group"], list(info["tags"]), info["config"], history,
        info.get("exit_code"), files_dir,
    )
