"""``run(cfg)``: generate a benchmark's missing images, score them (cached), write and log the table.

Resumable at two levels:

* **images** -- an image file that exists is never generated again; generation is seeded
  per item (:meth:`Benchmark.item_seeds`, by default the prompt text), so a resumed run produces the
  same images a single run would have;
* **scores** -- ``scores.jsonl`` caches each image's row under (relative path, SHA-256 of
  the file, fingerprint of the scoring config); only new or changed images are scored.

Outputs in ``out_dir``: ``images/`` (benchmark naming), ``generations.jsonl`` (prompt, CoT,
path of every generated image), ``scores.jsonl``, ``results.json`` (with its ``provenance``:
benchmark file hashes, judges, generation protocol, versions), ``results.md``.
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
from t2ir1.evaluate.provenance import file_hashes
from t2ir1.evaluate.report import compare_table, results_table
from t2ir1.policy import run_card

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
    model = model_tag(cfg)
    if cfg.get("ckpt_path"):
        # trained weights get their own folder: never the base model's cached images
        checkpoint = Path(str(cfg.ckpt_path)).expanduser().resolve()
        model += f"@{checkpoint.stem}-{hashlib.sha256(str(checkpoint).encode()).hexdigest()[:8]}"
    default = f"{model}-{'cot' if cfg.use_cot else 'nocot'}" + (f"-{key[:8]}" if key else "")
    run_name = cfg.get("run_name") or default
    return Path(cfg.out_root).expanduser() / benchmark_name / run_name


def generation_settings_of(cfg: DictConfig, benchmark: Benchmark, overrides: dict) -> dict[str, Any]:
    """Everything that determines this evaluation's images, for its folder key (:mod:`t2ir1.output_keys`)."""
    from t2ir1.output_keys import generation_settings as key_settings
    from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt

    sampling = generation_settings(cfg, overrides)
    return key_settings(
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
    from t2ir1.output_keys import OutputMismatchError

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
    cfg: DictConfig,
    benchmark: Benchmark,
    items: Sequence[EvalItem],
    out_dir: Path,
    overrides: dict,
    log_name: str = GENERATIONS_JSONL,
    device: str | None = None,
) -> int:
    """Generate and write the images of ``items`` that do not exist yet; returns how many were written.

    ``log_name`` is the generation log's file name (one per process when sharded, merged after),
    ``device`` the policy's device (default: ``cfg.device``).
    """
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
    log.info(
        "generating %d prompt(s) x %d image(s) %s semantic CoT (%d prompt(s) already done)",
        len(todo),
        benchmark.n_per_prompt,
        "WITH" if cfg.use_cot else "WITHOUT",
        len(items) - len(todo),
    )
    policy = build_policy(cfg.model, "eval.py model config")
    if cfg.get("ckpt_path"):
        from t2ir1.export import load_policy_weights

        # a training checkpoint: a file, or the folder of a sharded (trainer=fsdp) run
        load_policy_weights(policy, cfg.ckpt_path)
    from t2ir1.generate import load_ema_if_asked

    load_ema_if_asked(policy, cfg, "eval.py")
    policy = policy.to(device or resolve_device(cfg.device))
    # null settings come from the model's run card (what it was trained with), else the paper's
    settings = run_card.generation_settings(generation_settings(cfg, overrides), policy, cfg.get("ckpt_path"))
    run_card.record_settings(out_dir, settings)  # the provenance names them (null config values came from a card)
    written = 0
    progress = tqdm(total=len(todo) * benchmark.n_per_prompt, desc=f"{benchmark.name}: generate", unit="img")
    log_path = out_dir / log_name

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
            system_prompt=settings["system_prompt"],
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
    cache_name: str = SCORES_JSONL,
) -> list[dict[str, Any]]:
    """One row per existing image, in (item, sample) order; new or changed images are scored and cached.

    New rows are appended to ``cache_name`` (one file per process when sharded, merged after).
    Benchmarks with ``group_by_item`` score an item's images together: when one of them is new,
    all of them are scored again, and a scoring call never splits an item.
    """
    root = out_dir / IMAGES_DIR
    cache_path = out_dir / cache_name
    cache = {} if rescore else load_cache(out_dir / SCORES_JSONL)
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
    chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    if benchmark.group_by_item and todo:
        stale = {planned[p][0].key for p in todo}
        todo = [p for p in range(len(planned)) if planned[p][0].key in stale]
        chunks = []
        for position in todo:
            same_item = chunks and planned[chunks[-1][-1]][0].key == planned[position][0].key
            if chunks and (same_item or len(chunks[-1]) < batch_size):
                chunks[-1].append(position)
            else:
                chunks.append([position])
    if todo:
        benchmark.setup(device)
        log.info("scoring %d image(s) (%d cached)", len(todo), len(planned) - len(todo))
        mode = "w" if rescore and cache_name == SCORES_JSONL else "a"
        with (
            cache_path.open(mode, encoding="utf-8") as handle,
            tqdm(total=len(todo), desc=f"{benchmark.name}: score", unit="img") as bar,
        ):
            for chunk in chunks:
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


# ----------------------------------------------------------------------------- provenance
def generation_settings(cfg: DictConfig, overrides: dict) -> dict[str, Any]:
    """The generation settings in force: the top-level ``generation`` keys, then the benchmark's overrides."""
    return {**OmegaConf.to_container(cfg.generation, resolve=True), **overrides}


def provenance(
    cfg: DictConfig, benchmark: Benchmark, settings: dict[str, Any], scoring_config: dict[str, Any]
) -> dict[str, Any]:
    """What produced a result: benchmark files, judges, generation protocol, scoring settings, versions."""
    import t2ir1
    from t2ir1.policy.prompts import load_reasoning_prompt

    reasoning = settings.get("reasoning_prompt")
    protocol = {
        "n_per_prompt": benchmark.n_per_prompt,
        "use_cot": bool(cfg.use_cot),
        "seed": int(cfg.seed),
        "seeds": f"per item: {type(benchmark).__name__}.item_seeds(seed) (default: generation_seed(seed, prompt text))",
        **{k: v for k, v in settings.items() if k != "reasoning_prompt"},
        "reasoning_prompt": {
            "setting": reasoning,
            "text": load_reasoning_prompt(reasoning) if reasoning is not None else None,
        },
    }
    model = cfg.get("model") or {}
    judge_free = {k: v for k, v in scoring_config.items() if k not in ("_target_", "name")}
    return {
        "benchmark": benchmark.name,
        "files": file_hashes(benchmark.source_files()),
        "judge": benchmark.describe_judges(),
        "protocol": protocol,
        "scoring": judge_free,
        "model": {"tag": model_tag(cfg), "name_or_path": model.get("name_or_path") if model else None},
        "images_generated_by_this_run": bool(cfg.generate),
        "t2ir1_version": t2ir1.__version__,
    }


# ----------------------------------------------------------------------------- shards
def shard(items: Sequence[EvalItem], rank: int, world_size: int) -> list[EvalItem]:
    """Every ``world_size``-th item from ``rank``: disjoint shards that cover the list (seeds are per prompt)."""
    return list(items[rank::world_size])


def rank_device(device: str, rank: int) -> str:
    """``auto`` -> ``cuda:<rank mod GPUs>`` when CUDA is there, else cpu; an explicit device is kept."""
    import torch

    if device == "auto":
        return f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    return device


def merge_rank_files(out_dir: Path) -> None:
    """Append the per-process generation logs and score caches to the shared files, then delete them."""
    for shared, pattern in (
        (GENERATIONS_JSONL, "generations.rank*.jsonl"),
        (SCORES_JSONL, "scores.rank*.jsonl"),
    ):
        parts = sorted(out_dir.glob(pattern))
        if not parts:
            continue
        with (out_dir / shared).open("a", encoding="utf-8") as handle:
            for part in parts:
                handle.write(part.read_text(encoding="utf-8"))
                part.unlink()


def evaluate_shard(cfg: DictConfig, out_dir: Path, rank: int, world_size: int) -> None:
    """Generate and score one process's shard of the items (run by each of ``processes`` workers)."""
    benchmark, overrides, scoring_config = build_benchmark(cfg.benchmark)
    items = load_limited(cfg, benchmark)
    mine = shard(items, rank, world_size)
    device = rank_device(str(cfg.device), rank)
    root = out_dir / IMAGES_DIR
    for item in mine:
        benchmark.prepare_item(root, item)
        benchmark.finalize_item(root, item)
    if cfg.generate:
        generate_missing(cfg, benchmark, mine, out_dir, overrides, f"generations.rank{rank}.jsonl", device)
    for item in mine:
        benchmark.finalize_item(root, item)
    score_images(
        benchmark,
        mine,
        out_dir,
        fingerprint(scoring_config),
        batch_size=int(cfg.score.batch_size),
        device=device,
        rescore=bool(cfg.score.rescore),
        cache_name=f"scores.rank{rank}.jsonl",
    )
    log.info("rank %d/%d: %d of %d item(s) done", rank, world_size, len(mine), len(items))


def _shard_worker(rank: int, world_size: int, cfg_yaml: str, out_dir: str, port: int) -> None:
    """One spawned evaluation process: join the (gloo) group, do its shard, wait for the others."""
    import os

    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        evaluate_shard(OmegaConf.create(cfg_yaml), Path(out_dir), rank, world_size)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_processes(cfg: DictConfig, out_dir: Path, processes: int) -> None:
    """Spawn ``processes`` workers (one per GPU when there are GPUs); returns when all are done."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log.info("evaluating with %d processes (disjoint prompt shards, per-prompt seeds)", processes)
    mp.spawn(
        _shard_worker,
        args=(processes, OmegaConf.to_yaml(cfg, resolve=True), str(out_dir), port),
        nprocs=processes,
        join=True,
    )


def torchrun_context() -> tuple[int, int] | None:
    """``(rank, world_size)`` when launched by torchrun (or any launcher that sets RANK/WORLD_SIZE)."""
    import os

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def load_limited(cfg: DictConfig, benchmark: Benchmark) -> list[EvalItem]:
    items = benchmark.load_items()
    return items[: int(cfg.limit)] if cfg.get("limit") else items


# ----------------------------------------------------------------------------- entry point
def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured (or, with ``compare``, tabulate finished runs); returns the summary.

    ``processes: N`` spawns N workers (gloo group; one GPU each when there are GPUs) that generate
    and score disjoint prompt shards with the same per-prompt seeds as one process, then this
    process merges their logs and caches and writes the table. Under torchrun (RANK/WORLD_SIZE set)
    each rank does its shard and rank 0 writes the table.
    """
    if cfg.get("compare"):
        table = compare_table(
            [Path(p).expanduser() for p in cfg.compare],
            allow_mismatch=bool(cfg.get("compare_allow_mismatch", False)),
        )
        log.info("comparison of %d run(s):\n%s", len(cfg.compare), table)
        if cfg.get("compare_out"):
            Path(cfg.compare_out).expanduser().write_text(table + "\n", encoding="utf-8")
        return {"table": table}

    from t2ir1.output_keys import RUN_JSON, claim_output_dir, settings_key
    from t2ir1.validation import check_eval_config, check_model_node

    check_eval_config(cfg)
    check_model_node(cfg.model, "eval.py model config")
    benchmark, overrides, scoring_config = build_benchmark(cfg.benchmark)
    items = load_limited(cfg, benchmark)
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
    cfg = cfg.copy()
    OmegaConf.update(cfg, "out_dir", str(out_dir), force_add=True)
    launched = torchrun_context()
    if cfg.score.rescore and launched is None:
        # rescore: the cache is rewritten (under torchrun the new rows are appended and win on reading)
        (out_dir / SCORES_JSONL).unlink(missing_ok=True)

    processes = int(cfg.get("processes") or 1)
    if launched is not None:
        import torch.distributed as dist

        rank, world_size = launched
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        evaluate_shard(cfg, out_dir, rank, world_size)
        dist.barrier()
        if rank != 0:
            return {}
    elif processes > 1:
        run_processes(cfg, out_dir, processes)
    else:
        evaluate_shard(cfg, out_dir, 0, 1)
    merge_rank_files(out_dir)
    root = out_dir / IMAGES_DIR
    for item in items:
        benchmark.finalize_item(root, item)
    rows = score_images(  # every row is cached by now: this reads them back in item order
        benchmark,
        items,
        out_dir,
        fingerprint(scoring_config),
        batch_size=int(cfg.score.batch_size),
        device=resolve_device(cfg.device),
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
            # the settings the images were sampled with (run-card values included), else the config's
            "provenance": provenance(
                cfg, benchmark, run_card.recorded_settings(out_dir) or generation_settings(cfg, overrides), scoring_config
            ),
        }
    )
    (out_dir / RESULTS_JSON).write_text(json.dumps(_json_safe(summary), indent=2) + "\n", encoding="utf-8")
    table = results_table(summary)
    (out_dir / RESULTS_MD).write_text(table + "\n", encoding="utf-8")
    log.info("%s results (%s semantic CoT):\n%s", benchmark.name, "with" if cfg.use_cot else "without", table)
    return summary
