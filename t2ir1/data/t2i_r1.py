"""The T2I-R1 training prompts: a JSON Lines file read from a path given in config.

The file (``geneval_and_t2i_data_final.jsonl``, REFERENCE §4) is not part of this project;
``conf/data/t2i_r1.yaml`` points at it. Every line is validated once, here, so that a bad
row fails at load time with its file and line rather than deep inside a reward model.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from t2ir1.data.records import PromptRecord, RecordError

log = logging.getLogger(__name__)


def resolve_path(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the directory the run was started in.

    Under Hydra the working directory may have changed to the run's output folder, so a
    relative path is resolved with ``hydra.utils.to_absolute_path`` when Hydra is active.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        from hydra.utils import to_absolute_path

        return Path(to_absolute_path(str(path)))
    return path.resolve()


def load_t2i_r1_jsonl(path: str | Path) -> list[PromptRecord]:
    """Load and validate every row of a T2I-R1-style JSON Lines prompt file.

    Blank lines are skipped. Each record's ``prompt_id`` is ``"t2i_r1/{lineno}"`` (1-based
    line number in the file), stable across runs and independent of shuffling.

    Raises:
        FileNotFoundError: the file does not exist (the message says how to point at it).
        RecordError: a line is not valid JSON or not a valid record; the message names
            ``file:line``.
    """
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(
            f"T2I-R1 prompt file not found: {resolved} (from data path {str(path)!r}). "
            "Set data.source.path=/path/to/geneval_and_t2i_data_final.jsonl on the command line, "
            "or set T2IR1_SHARED to the folder that holds data/t2i-r1/."
        )
    records: list[PromptRecord] = []
    try:
        text = resolved.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = resolved.read_bytes()[: error.start].count(b"\n") + 1
        raise RecordError(
            f"{resolved}:{line}: not UTF-8 (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    # line numbers as a text-mode file counts them (universal newlines)
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        if not line.strip():
            continue
        where = f"{resolved}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        if isinstance(row, dict):
            row = {**row, "prompt_id": row.get("prompt_id") or f"t2i_r1/{lineno}"}
        records.append(PromptRecord.from_dict(row, where=where))
    if not records:
        raise RecordError(
            f"{resolved}: the file holds no prompts; point data.source.path at a non-empty JSONL file"
        )
    log.info("loaded %d prompts from %s", len(records), resolved)
    return records
