"""What determines a folder of generated images, written down so that reruns never mix them.

``generate.py`` and ``eval.py`` write images into a folder that a later run may reuse to
resume. Every setting that changes the images (the weights' identity, the seed, CFG,
temperatures and other sampling knobs, CoT on/off, the reasoning template, images per
prompt) goes into a *generation key*; the folder's ``run.json`` records it. A rerun with the
same key resumes the same work; a different key is refused with the settings that differ
(``eval.py`` by default names its folder after the key, so it simply lands elsewhere).

The weights' identity is the resolved ``model`` node plus, for every local weight file it
points at (``name_or_path`` directory, ``ckpt_path``), the file's resolved path, size and
modification time: a checkpoint rewritten in place (a newer ``last.ckpt``) is another model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_JSON = "run.json"

# Generation settings that change how fast images come, never which images come.
SPEED_ONLY = frozenset({"batch_size", "decode_micro_batch_size", "chunk_rows", "compile", "memory_budget_gib"})
# Files whose identity is the identity of a model directory.
_WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin", "*.ckpt", "*.pt", "*.json", "*.model")


class OutputMismatchError(RuntimeError):
    """An output folder holds images made with other settings."""


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def file_identity(path: str | Path) -> dict[str, Any]:
    """``{path, size, mtime_ns}`` of a file, or of every weight/config file of a directory."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_file():
        stat = resolved.stat()
        return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if resolved.is_dir():
        files = sorted({f for pattern in _WEIGHT_PATTERNS for f in resolved.glob(pattern) if f.is_file()})
        return {"path": str(resolved), "files": [{**file_identity(f), "path": f.name} for f in files]}
    return {"path": str(resolved), "exists": False}


def weights_identity(model_node: Any, ckpt_path: str | None = None) -> dict[str, Any]:
    """The model node plus the identity of each local file it (and ``ckpt_path``) points at."""
    model = _plain(model_node) or {}
    identity: dict[str, Any] = {"model": model}
    name = model.get("name_or_path") if isinstance(model, Mapping) else None
    if name and Path(str(name)).expanduser().exists():
        identity["model_files"] = file_identity(str(name))
    if ckpt_path:
        identity["checkpoint"] = file_identity(str(ckpt_path))
    return identity


def generation_settings(
    model_node: Any,
    ckpt_path: str | None,
    sampling: Mapping[str, Any],
    *,
    seed: int,
    use_cot: bool,
    n_per_prompt: int,
    reasoning_text: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that determines the images (speed-only knobs such as ``batch_size`` left out)."""
    sampling = {k: v for k, v in dict(_plain(sampling)).items() if k not in SPEED_ONLY and k != "reasoning_prompt"}
    settings = {
        "weights": weights_identity(model_node, ckpt_path),
        "seed": int(seed),
        "use_cot": bool(use_cot),
        "n_per_prompt": int(n_per_prompt),
        "sampling": sampling,
        # the template's text, not its name: editing the file changes the CoTs
        "reasoning_prompt": reasoning_text if use_cot else None,
    }
    if extra:
        settings.update(dict(extra))
    return settings


def settings_key(settings: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``settings``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            child = f"{path}.{key}" if path else str(key)
            found += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"), child)
        return found
    return [] if old == new else [f"{path}: {old!r} then, {new!r} now"]


def _holds_something(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def claim_output_dir(out_dir: Path, settings: Mapping[str, Any], earlier_outputs: Iterable[str], how_to_fix: str) -> str:
    """Record ``settings`` in ``out_dir/run.json``, or refuse a folder made with other settings.

    Args:
        out_dir: the output folder (created by the caller).
        settings: :func:`generation_settings` of this run.
        earlier_outputs: file names that mean "images were already written here"; a folder
            holding any of them but no ``run.json`` is refused (its settings are unknown).
        how_to_fix: the sentence that tells the user which key picks another folder.
    Returns:
        The settings key.
    """
    key = settings_key(settings)
    manifest = out_dir / RUN_JSON
    record = {"key": key, "settings": settings}
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
            previous_key, previous_settings = previous["key"], previous["settings"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise OutputMismatchError(
                f"{manifest} is unreadable ({type(error).__name__}); its images cannot be matched to settings. "
                f"{how_to_fix}"
            ) from None
        if previous_key != key:
            listing = "\n  ".join(_differences(previous_settings, json.loads(json.dumps(settings, default=str))))
            raise OutputMismatchError(
                f"{out_dir} holds images made with other settings (run.json key {previous_key}, this run {key}); "
                f"reusing them would mix images. Differences:\n  {listing or '(settings format changed)'}\n{how_to_fix}"
            )
        return key
    present = [name for name in earlier_outputs if _holds_something(out_dir / name)]
    if present:
        raise OutputMismatchError(
            f"{out_dir} already holds {present[0]} but no {RUN_JSON}, so the settings its images were made with "
            f"are unknown; it is not reused. {how_to_fix}"
        )
    staging = manifest.with_name(manifest.name + ".tmp")
    staging.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    staging.replace(manifest)
    return key


def prompt_digest(prompt: str) -> str:
    """12 hex digits naming a prompt's files (the same text always gets the same name)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
