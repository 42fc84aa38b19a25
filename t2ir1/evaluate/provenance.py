"""Where a number came from: file hashes, judge identities, the generation protocol, and the
check that refuses to put numbers from different judges or protocols side by side.

A judge other than a benchmark's official one gives numbers on another scale, and so do
different sampling settings (images per prompt, CFG, temperatures, CoT on/off): every
``results.json`` carries a ``provenance`` block, and ``compare=[...]`` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Protocol keys that may differ between compared runs without a warning: the model and the
# CoT switch are what a comparison is for (T2I-R1 is scored with CoT, its baseline without).
COMPARED_ON_PURPOSE = ("use_cot",)
# Generation settings that change how fast images are made, never which images.
SPEED_ONLY = ("batch_size", "decode_micro_batch_size", "chunk_rows", "compile")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path: sha256}`` of benchmark files (a folder hashes the sorted list of its files' hashes)."""
    out: dict[str, str] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            members = sorted(p for p in path.rglob("*") if p.is_file())
            listing = "\n".join(f"{p.relative_to(path).as_posix()} {sha256_file(p)}" for p in members)
            out[str(path)] = sha256_text(listing)
        elif path.is_file():
            out[str(path)] = sha256_file(path)
    return out


def model_provenance(model_path: str | None, **extra: Any) -> dict[str, Any]:
    """Identity of a judge checkpoint without loading it.

    Local folder: its resolved path and a hash of its ``config.json`` plus the names and sizes of
    its files (hashing multi-GB weights on every run would cost minutes). Hub id: the commit of
    the snapshot in the local Hugging Face cache when there is one (never a network call).
    """
    info: dict[str, Any] = {"model": model_path, **extra}
    if not model_path:
        return info
    folder = Path(str(model_path)).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listing = "\n".join(f"{p.relative_to(folder).as_posix()} {p.stat().st_size}" for p in files)
        config = folder / "config.json"
        info["path"] = str(folder.resolve())
        info["config_sha256"] = sha256_file(config) if config.is_file() else None
        info["files_fingerprint"] = sha256_text(listing)[:16]
        return info
    if folder.is_file():
        info["path"] = str(folder.resolve())
        info["size"] = folder.stat().st_size
        return info
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model_path), "config.json")
    except Exception:  # an id that is not a valid repo name: nothing cached to read
        cached = None
    if isinstance(cached, str) and "/snapshots/" in cached:
        info["revision"] = cached.split("/snapshots/")[1].split("/")[0]
    else:
        info["revision"] = None
    return info


def describe(judge: Any) -> Any:
    """A judge's ``describe()`` (its provenance dict), or its class name when it has none."""
    if judge is None:
        return None
    if hasattr(judge, "describe"):
        return judge.describe()
    return {"class": type(judge).__name__}


# ----------------------------------------------------------------------------- compare
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, sort_keys=True) if isinstance(value, list) else value}


def _differences(values: Sequence[dict[str, Any]], skip: Sequence[str] = ()) -> dict[str, list[Any]]:
    flat = [_flatten(v or {}) for v in values]
    keys = sorted(set().union(*flat)) if flat else []
    out = {}
    for key in keys:
        if any(key == s or key.startswith(s + ".") or key.endswith("." + s) for s in skip):
            continue
        seen = [f.get(key) for f in flat]
        if len({json.dumps(s, sort_keys=True, default=str) for s in seen}) > 1:
            out[key] = seen
    return out


def check_comparable(
    runs: Sequence[dict[str, Any]], names: Sequence[str], allow_mismatch: bool = False
) -> list[str]:
    """Refuse (``ValueError``) runs scored by different judges, benchmark files or scoring settings;
    return warning lines for runs generated under different protocols (logged loudly).

    With ``allow_mismatch`` the refusal becomes warning lines too. Runs without a provenance
    block (written before it existed) give a warning: nothing can be checked for them.
    """
    warnings: list[str] = []
    missing = [n for n, r in zip(names, runs, strict=True) if "provenance" not in r]
    if missing:
        warnings.append(f"no provenance recorded for {missing}: judge and protocol cannot be checked")
    present = [(n, r["provenance"]) for n, r in zip(names, runs, strict=True) if "provenance" in r]
    if len(present) < 2:
        return warnings
    labels = [n for n, _ in present]
    blocks = [p for _, p in present]

    fatal = []
    for part in ("judge", "scoring", "files"):
        diff = _differences([b.get(part) for b in blocks])
        fatal += [
            f"{part}.{key}: " + ", ".join(f"{n}={v!r}" for n, v in zip(labels, seen, strict=True))
            for key, seen in diff.items()
        ]
    if fatal:
        message = (
            "compare: the runs were scored differently, so their numbers are on different scales:\n  "
            + "\n  ".join(fatal)
        )
        if not allow_mismatch:
            raise ValueError(
                message + "\nScore them again with one judge (generate=false on each run folder), "
                "or pass compare_allow_mismatch=true to tabulate them anyway (marked in the table)."
            )
        warnings.append(message)
    protocol = _differences([b.get("protocol") for b in blocks], skip=(*COMPARED_ON_PURPOSE, *SPEED_ONLY))
    for key, seen in protocol.items():
        warnings.append(
            f"protocol differs in {key}: "
            + ", ".join(f"{n}={v!r}" for n, v in zip(labels, seen, strict=True))
        )
    version = _differences([{"t2ir1_version": b.get("t2ir1_version")} for b in blocks])
    for key, seen in version.items():
        warnings.append(
            f"{key} differs: " + ", ".join(f"{n}={v!r}" for n, v in zip(labels, seen, strict=True))
        )
    for line in warnings:
        log.warning("COMPARE WARNING: %s", line)
    return warnings
