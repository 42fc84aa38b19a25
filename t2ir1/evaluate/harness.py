"""``run(cfg)``: generate a benchmark's missing images, score them (cached), write and log the table.

Resumable at two levels:

* **images** -- an image file that exists is never generated again; generation is seeded
  per item (:meth:`Benchmark.item_seeds`, by default the prompt text), so a resumed run produces the
  same images a single run would have;
* **scores** -- ``scores.jsonl`` caches each image's row under (relative path, SHA-256 of
  the file, fingerprint of the scoring config); only new or changed images are scored.

Outputs in ``out_dir``: ``images/`` (benchmark naming), ``generations.jsonl`` (prompt, CoT,
path of every generated image), ``scores.jsonl``, ``results.json``, ``results.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from t2ir1.evaluate.base import Benchmark, EvalItem, ImageEntry
from t2ir1.evaluate.report import compare_table, results_table

log = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SCORES_JSONL = "scores.jsonl"
GENERATIONS_JSONL = "generations.jsonl"
IMAGES_DIR = "images"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(config: Any) -> str:
    """Short hash of a JSON-able config (the scoring settings a cached row depends on)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_tag(cfg: DictConfig) -> str:
    """A short name for the model in folder names: the Hydra choice, else the checkpoint's folder name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices["model"])
    except (ValueError, KeyError, AttributeError):
        pass
    name = cfg.model.get("name_or_path") if cfg.get("model") else None
    return Path(str(name)).name if name else "model"


def output_dir(cfg: DictConfig, benchmark_name: str, key: str | None = None) -> Path:
    """``out_dir``, else ``<out_root>/<benchmark>/<run_name>``; the default run name ends in the
    settings key, so another checkpoint, seed or CFG weight gets its own folder."""
    if cfg.get("out_dir"):
        return Path(cfg.out_dir).expanduser()
    default = f"{model_tag(cfg)}-{'cot' if cfg.use_cot else 'nocot'}" + (f"-{key[:8]}" if key else "")
    run_name = cfg.get("run_name") or default
    return Path(cfg.out_root).expanduser() / benchmark_name / run_name


def generation_settings_of(cfg: DictConfig, benchmark: Benchmark, overrides: dict) -> dict[str, Any]:
    """Everything that determines this evaluation's images (see :mod:`t2ir1.provenance`)."""
    from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
    from t2ir1.provenance import generation_settings

    sampling = {**OmegaConf.to_container(cfg.generation, resolve=True), **overrides}
    return generation_settings(
        cfg.model,
        cfg.get("ckpt_path"),
        sampling,
        seed=int(cfg.seed),
        use_cot=bool(cfg.use_cot),
        n_per_prompt=benchmark.n_per_prompt,
        reasoning_text=load_reasoning_prompt(sampling.get("reasoning_prompt")) if cfg.use_cot else None,
        extra={"benchmark": benchmark.name, "system_prompt": SYSTEM_PROMPT},
    )


def check_recorded_prompts(benchmark: Benchmark, items: Sequence[EvalItem], out_dir: Path) -> None:
    """Refuse an image whose ``generations.jsonl`` row names another prompt than its item's today."""
    from t2ir1.provenance import OutputMismatchError

    log_path = out_dir / GENERATIONS_JSONL
    if not log_path.is_file():
        return
    recorded: dict[tuple[str, int], str] = {}
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            recorded[(str(row["key"]), int(row["sample"]))] = row["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a crash
    root = out_dir / IMAGES_DIR
    for item in items:
        for sample in range(benchmark.n_per_prompt):
            prompt = recorded.get((str(item.key), sample))
            if prompt is not None and prompt != item.prompt and benchmark.image_path(root, item, sample).is_file():
                raise OutputMismatchError(
                    f"{benchmark.image_path(root, item, sample)} was generated for {prompt!r}, but item {item.key} "
                    f"is now {item.prompt!r} (the benchmark's prompt file changed). Use another out_dir / run_name."
                )


def build_benchmark(node: DictConfig) -> tuple[Benchmark, dict[str, Any], dict[str, Any]]:
    """Instantiate the benchmark; returns it, its generation overrides and its scoring config (for the cache key)."""
    from hydra.utils import instantiate

    container = OmegaConf.to_container(node, resolve=True)
    overrides = container.pop("generation", None) or {}
    benchmark = instantiate(container, _convert_="all")
    return benchmark, overrides, container


# ----------------------------------------------------------------------------- generation
def missing_images(benchmark: Benchmark, root: Path, items: Sequence[EvalItem]) -> list[EvalItem]:
    """Items with at least one image not on disk yet."""
    return [
        item
        for item in items
        if not all(benchmark.image_path(root, item, j).is_file() for j in range(benchmark.n_per_prompt))
    ]


def generate_missing(
    cfg: DictConfig, benchmark: Benchmark, items: Sequence[EvalItem], out_dir: Path, overrides: dict
) -> int:
    """Generate and write the images of ``items`` that do not exist yet; returns how many were written."""
    from t2ir1.generate import engine_options, generate_samples
    from t2ir1.validation import build_policy

    root = out_dir / IMAGES_DIR
    todo = missing_images(benchmark, root, items)
    for item in items:
        benchmark.prepare_item(root, item)
    if not todo:
        log.info(
            "all %d prompts already have their %d image(s): nothing to generate",
            len(items),
            benchmark.n_per_prompt,
        )
        return 0
    settings = {**OmegaConf.to_container(cfg.generation, resolve=True), **overrides}
    log.info(
        "generating %d prompt(s) x %d image(s) %s semantic CoT (%d prompt(s) already done)",
        len(todo),
        benchmark.n_per_prompt,
        "WITH" if cfg.use_cot else "WITHOUT",
        len(items) - len(todo),
    )
    policy = build_policy(cfg.model, "eval.py model config")
    policy = policy.to(resolve_device(cfg.device))
    written = 0
    progress = tqdm(total=len(todo) * benchmark.n_per_prompt, desc=f"{benchmark.name}: generate", unit="img")
    log_path = out_dir / GENERATIONS_JSONL

    def write(batch) -> None:
        nonlocal written
        with log_path.open("a", encoding="utf-8") as handle:
            for sample in batch:
                item = todo[sample.prompt_index]
                path = benchmark.image_path(root, item, sample.sample_index)
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    staging = path.with_name(path.name + ".tmp")
                    sample.image.save(staging, format="PNG")
                    staging.replace(path)  # never leave half an image behind a crash
                    written += 1
                    row = {
                        "key": item.key,
                        "sample": sample.sample_index,
                        "prompt": item.prompt,
                        "cot": sample.cot,
                    }
                    handle.write(json.dumps({**row, "path": str(path.relative_to(out_dir))}) + "\n")
        progress.update(len(batch))

    try:
        generate_samples(
            policy,
            [item.prompt for item in todo],
            n_per_prompt=benchmark.n_per_prompt,
            use_cot=bool(cfg.use_cot),
            cfg_weight=settings["cfg_weight"],
            text_temperature=settings["text_temperature"],
            image_temperature=settings["image_temperature"],
            max_new_tokens=settings["max_new_tokens"],
            reasoning_template=settings["reasoning_prompt"],
            batch_size=settings["batch_size"],
            seed=int(cfg.seed),
            decode_micro_batch_size=settings["decode_micro_batch_size"],
            on_batch=write,
            seeds=benchmark.item_seeds(todo, int(cfg.seed)),
            **engine_options(settings),
        )
    finally:
        progress.close()
    return written


# ----------------------------------------------------------------------------- scoring
def load_cache(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    cache: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.is_file():
        return cache
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            cache[(entry["path"], entry["sha256"], entry["fingerprint"])] = entry["row"]
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s:%d: unreadable cache line, its image will be scored again", path, number)
    return cache


def score_images(
    benchmark: Benchmark,
    items: Sequence[EvalItem],
    out_dir: Path,
    score_fingerprint: str,
    batch_size: int,
    device: str,
    rescore: bool = False,
) -> list[dict[str, Any]]:
    """One row per existing image, in (item, sample) order; new or changed images are scored and cached."""
    root = out_dir / IMAGES_DIR
    cache_path = out_dir / SCORES_JSONL
    cache = {} if rescore else load_cache(cache_path)
    planned: list[tuple[EvalItem, int, Path, str, str]] = []
    absent = 0
    for item in items:
        for sample in range(benchmark.n_per_prompt):
            path = benchmark.image_path(root, item, sample)
            if not path.is_file():
                absent += 1
                continue
            planned.append((item, sample, path, str(path.relative_to(out_dir)), file_sha256(path)))
    if absent:
        log.warning("%d image(s) are missing and are left out of the scores (run with generate=true)", absent)
    rows: dict[int, dict[str, Any]] = {}
    todo = []
    for position, (_, _, _, rel, digest) in enumerate(planned):
        cached = cache.get((rel, digest, score_fingerprint))
        if cached is not None:
            rows[position] = cached
        else:
            todo.append(position)
    if todo:
        benchmark.setup(device)
        log.info("scoring %d image(s) (%d cached)", len(todo), len(planned) - len(todo))
        mode = "w" if rescore else "a"
        with (
            cache_path.open(mode, encoding="utf-8") as handle,
            tqdm(total=len(todo), desc=f"{benchmark.name}: score", unit="img") as bar,
        ):
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                entries = []
                for position in chunk:
                    item, sample, path, _, _ = planned[position]
                    with Image.open(path) as opened:
                        entries.append(ImageEntry(item, sample, path, opened.convert("RGB")))
                scored = benchmark.score(entries)
                for position, row in zip(chunk, scored, strict=True):
                    item, sample, _, rel, digest = planned[position]
                    row = {"key": item.key, "sample": sample, "prompt": item.prompt, **row}
                    rows[position] = row
                    entry = {"path": rel, "sha256": digest, "fingerprint": score_fingerprint, "row": row}
                    handle.write(json.dumps(entry, allow_nan=True) + "\n")
                bar.update(len(chunk))
    return [rows[p] for p in range(len(planned))]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------- entry point
def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured (or, with ``compare``, tabulate finished runs); returns the summary."""
    if cfg.get("compare"):
        table = compare_table([Path(p).expanduser() for p in cfg.compare])
        log.info("comparison of %d run(s):\n%s", len(cfg.compare), table)
        if cfg.get("compare_out"):
            Path(cfg.compare_out).expanduser().write_text(table + "\n", encoding="utf-8")
        return {"table": table}

    from t2ir1.provenance import RUN_JSON, claim_output_dir, settings_key
    from t2ir1.validation import check_eval_config, check_model_node

    check_eval_config(cfg)
    check_model_node(cfg.model, "eval.py model config")
    benchmark, overrides, scoring_config = build_benchmark(cfg.benchmark)
    items = benchmark.load_items()
    if cfg.get("limit"):
        items = items[: int(cfg.limit)]
    settings = generation_settings_of(cfg, benchmark, overrides)
    out_dir = output_dir(cfg, benchmark.name, settings_key(settings))
    out_dir.mkdir(parents=True, exist_ok=True)
    how_to_fix = "Pass another out_dir=... / run_name=... (or leave both unset: the default folder is per settings)."
    if cfg.generate or (out_dir / RUN_JSON).is_file():
        claim_output_dir(out_dir, settings, (GENERATIONS_JSONL, IMAGES_DIR), how_to_fix)
    check_recorded_prompts(benchmark, items, out_dir)
    log.info(
        "%s: %d prompt(s), %d image(s) each -> %s",
        benchmark.name,
        len(items),
        benchmark.n_per_prompt,
        out_dir,
    )

    if cfg.generate:
        generate_missing(cfg, benchmark, items, out_dir, overrides)
    else:
        for item in items:
            benchmark.prepare_item(out_dir / IMAGES_DIR, item)
    rows = score_images(
        benchmark,
        items,
        out_dir,
        fingerprint(scoring_config),
        batch_size=int(cfg.score.batch_size),
        device=resolve_device(cfg.device),
        rescore=bool(cfg.score.rescore),
    )
    summary = benchmark.summarize(rows)
    summary.update(
        {
            "benchmark": benchmark.name,
            "run": out_dir.name,
            "model": model_tag(cfg),
            "use_cot": bool(cfg.use_cot),
            "seed": int(cfg.seed),
            "settings_key": settings_key(settings),
            "n_prompts": len(items),
            "n_images": len(rows),
        }
    )
    (out_dir / RESULTS_JSON).write_text(json.dumps(_json_safe(summary), indent=2) + "\n", encoding="utf-8")
    table = results_table(summary)
    (out_dir / RESULTS_MD).write_text(table + "\n", encoding="utf-8")
    log.info("%s results (%s semantic CoT):\n%s", benchmark.name, "with" if cfg.use_cot else "without", table)
    return summary
