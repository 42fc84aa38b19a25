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
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

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


# ----------------------------------------------------------------------------- reading offline runs
# A ``.wandb`` file: a 7-byte header (":W&B", magic 0xBEE1 little-endian, version 0), then
# LevelDB-log framed protobuf ``Record``s: 32 KiB blocks, each chunk with a 7-byte header
# (crc32c u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last); a block tail shorter
# than a chunk header is zero padding.
_WANDB_HEADER = b":W&B" + (0xBEE1).to_bytes(2, "little") + b"\x00"
_BLOCK_SIZE = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """A file that is not a readable W&B run log."""


def iter_wandb_records(path: str | os.PathLike):
    """Yield the protobuf ``Record`` messages of a ``run-*.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(_WANDB_HEADER):
        raise WandbFileError(f"{path} does not start with the W&B header; is it a run-*.wandb file?")
    offset, pending = len(_WANDB_HEADER), b""
    while offset + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK_SIZE - offset % _BLOCK_SIZE
        if left_in_block < _CHUNK_HEADER:
            offset += left_in_block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        body = data[offset + _CHUNK_HEADER : offset + _CHUNK_HEADER + length]
        offset += _CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a file still being written
            break
        if kind in (_FULL, _FIRST):
            pending = body
        elif kind in (_MIDDLE, _LAST):
            pending += body
        else:
            raise WandbFileError(f"{path}: unknown chunk type {kind} at byte {offset}")
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@dataclass
class OfflineRun:
    """What a W&B run directory holds: config, metric history and summary, identity."""

    directory: Path
    run_id: str
    name: str
    group: str
    tags: list[str]
    config: dict
    # one dict per logged step, as logged (images and tables are dicts pointing into files/media)
    history: list[dict]
    summary: dict

    @property
    def media_dir(self) -> Path:
        return self.directory / "files" / "media"

    def metric(self, key: str) -> list[tuple[int, float]]:
        """``[(trainer/global_step, value)]`` of a scalar metric."""
        return [
            (int(row.get("trainer/global_step", row.get("_step", i))), float(row[key]))
            for i, row in enumerate(self.history)
            if isinstance(row.get(key), (int, float))
        ]


def _items_to_dict(items) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        try:
            out[key] = json.loads(item.value_json)
        except json.JSONDecodeError:
            out[key] = item.value_json
    return out


def find_wandb_runs(root: str | os.PathLike) -> list[Path]:
    """Run directories (``offline-run-*`` / ``run-*``) under ``root``, oldest first."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("run-*.wandb")}, key=lambda p: p.name)


def load_offline_run(run_dir: str | os.PathLike) -> OfflineRun:
    """Read a W&B run directory (``.../wandb/offline-run-*``) without network or account."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise WandbFileError(f"{run_dir} holds no run-*.wandb file; pass a .../wandb/offline-run-* directory")
    run_id = name = group = ""
    tags: list[str] = []
    config: dict = {}
    history: list[dict] = []
    summary: dict = {}
    for record in iter_wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id, name, group = record.run.run_id, record.run.display_name, record.run.run_group
            tags = list(record.run.tags)
            config.update(_items_to_dict(record.run.config.update))
        elif kind == "config":
            config.update(_items_to_dict(record.config.update))
        elif kind == "history":
            history.append(_items_to_dict(record.history.item))
        elif kind == "summary":
            summary.update(_items_to_dict(record.summary.update))
    # W&B wraps each config value as {"value": v}
    config = {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in config.items()}
    return OfflineRun(run_dir, run_id, name, group, tags, config, history, summary)
