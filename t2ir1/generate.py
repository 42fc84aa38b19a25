"""Generation with a (trained) Janus policy: reasoning, then image (REFERENCE §2.1-2.2).

The same generation engine as a training rollout (``t2ir1.rollout.engine``): the
semantic-level CoT is sampled from the reasoning prompt, then the image tokens from the
image prompt (``"{prompt}. {cot}"``) with classifier-free guidance, then decoded by the VQ
model. ``use_cot=False`` is the no-reasoning baseline (the image prompt is the prompt alone).

Randomness is one ``torch.Generator`` per prompt, seeded from ``(seed, prompt text)``, so a
prompt's samples do not depend on the batch it shares, the batch size, or which prompts
were generated before it (a resumed generation run reproduces the skipped prompts' images).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from t2ir1.policy.janus import JanusPolicy
from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
from t2ir1.policy.run_card import generation_settings, record_settings
from t2ir1.rollout.sampling import generation_seed

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One generated image with the text it came from."""

    prompt: str
    # the semantic-level CoT; None for the no-reasoning baseline
    cot: str | None
    image: Image.Image
    # [T] VQ codes of the image, on the CPU
    image_tokens: torch.Tensor
    # position of the prompt in the ``prompts`` argument
    prompt_index: int = 0
    # 0 .. n_per_prompt - 1 within its prompt
    sample_index: int = 0


# generation-config keys passed to the engine as they are (beyond the named arguments of generate_samples)
ENGINE_KEYS = (
    "text_top_k", "text_top_p", "image_top_k", "image_top_p", "cfg_uncond", "compile", "chunk_rows", "memory_budget_gib",
    "decode_dtype",
)  # fmt: skip


def engine_options(generation) -> dict:
    """The :data:`ENGINE_KEYS` present in a ``generation`` config node (or dict)."""
    return {key: generation[key] for key in ENGINE_KEYS if key in generation}


def _validate(prompts: Sequence[str], n_per_prompt: int, batch_size: int, max_new_tokens: int, use_cot: bool) -> None:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a single string; wrap it in a list")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"prompts {empty[:10]} are empty or not strings; every prompt needs text")
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (prompts per forward), got {batch_size}")
    if use_cot and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 when use_cot is true, got {max_new_tokens}")


@torch.no_grad()
def generate_samples(
    policy: JanusPolicy,
    prompts: Sequence[str],
    n_per_prompt: int = 1,
    use_cot: bool = True,
    cfg_weight: float = 5.0,
    text_temperature: float = 1.0,
    image_temperature: float = 1.0,
    max_new_tokens: int = 1024,
    reasoning_template: str | None = "default",
    system_prompt: str = SYSTEM_PROMPT,
    batch_size: int = 1,
    seed: int = 0,
    decode_micro_batch_size: int = 16,
    on_batch: Callable[[list[Sample]], None] | None = None,
    seeds: Sequence[int] | None = None,
    **options,
) -> list[Sample]:
    """Generate ``n_per_prompt`` images for every prompt (reasoning first unless ``use_cot`` is false).

    Every image comes from the generation engine (:mod:`t2ir1.rollout.engine`), the same
    path as a training rollout: equal seeds and settings give equal samples.

    Args:
        policy: the Janus policy (its device is used for everything).
        prompts: ``B`` prompt texts.
        n_per_prompt: images per prompt; with ``use_cot`` each image has its own CoT.
        use_cot: sample a semantic-level CoT first (T2I-R1) or condition on the prompt alone.
        cfg_weight: classifier-free guidance weight ``w`` (``uncond + w * (cond - uncond)``).
        text_temperature: temperature of the CoT tokens (0 = greedy).
        image_temperature: temperature of the image tokens (0 = greedy).
        max_new_tokens: longest CoT in tokens.
        reasoning_template: ``"default"``, a template text with one ``{}``, or a path to one.
        system_prompt: the system line of the semantic prompt.
        batch_size: prompts per engine call (each expands to ``n_per_prompt`` rows).
        seed: run seed; prompt ``p`` samples with ``generation_seed(seed, p)``.
        decode_micro_batch_size: images per VQ-decoder call.
        on_batch: called with each batch's samples as soon as they exist (progress, writing).
        seeds: explicit sampling seeds, one per prompt (overrides ``seed``).
        options: further :class:`~t2ir1.rollout.engine.SamplingOptions` (``text_top_k``,
            ``image_top_p``, ``cfg_uncond``, ``compile``, ``chunk_rows`` ...).
    Returns:
        ``B * n_per_prompt`` samples, prompt-major (``n_per_prompt`` consecutive per prompt).
    """
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions

    prompts = list(prompts) if not isinstance(prompts, str) else prompts
    _validate(prompts, n_per_prompt, batch_size, max_new_tokens, use_cot)
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: pass one seed per prompt")
    seeds = list(seeds) if seeds is not None else [generation_seed(seed, p) for p in prompts]
    template = load_reasoning_prompt(reasoning_template) if use_cot else None
    engine = GenerationEngine(
        policy,
        SamplingOptions(
            max_new_tokens=max_new_tokens,
            text_temperature=text_temperature,
            image_temperature=image_temperature,
            cfg_weight=cfg_weight,
            decode_micro_batch_size=decode_micro_batch_size,
            **options,
        ),
    )
    was_training = policy.training
    policy.eval()
    samples: list[Sample] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            generation = engine.generate(
                batch,
                seeds[start : start + batch_size],
                group_size=n_per_prompt,
                use_cot=use_cot,
                reasoning_template=template,
                system_prompt=system_prompt,
            )
            batch_samples = [
                Sample(
                    prompt=batch[row // n_per_prompt],
                    cot=generation.cots[row],
                    image=generation.images[row],
                    image_tokens=generation.image_tokens[row].cpu(),
                    prompt_index=start + row // n_per_prompt,
                    sample_index=row % n_per_prompt,
                )
                for row in range(generation.num_rows)
            ]
            samples.extend(batch_samples)
            if on_batch is not None:
                on_batch(batch_samples)
    finally:
        policy.train(was_training)
    return samples


# ----------------------------------------------------------------------------- the generate.py command
GENERATIONS_JSONL = "generations.jsonl"
IMAGES_DIR = "images"
GRID_PNG = "grid.png"


class PromptSourceError(ValueError):
    """``prompts=`` that cannot be read."""


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise PromptSourceError(
            f"{path}:{line}: not UTF-8 (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_prompts(spec) -> list[str]:
    """Prompts from a ``.txt`` file (one per line, ``#`` comments), a ``.jsonl`` file (``"prompt"``
    field), a list, or the text of a single prompt. Duplicates are dropped (same seed, same images)."""
    if isinstance(spec, list | tuple) or (hasattr(spec, "__iter__") and not isinstance(spec, str)):
        prompts = [str(p).strip() for p in spec]
    else:
        text = str(spec).strip()
        path = Path(text).expanduser()
        is_file = "\n" not in text and len(text) < 4096 and path.is_file()
        if not is_file and path.suffix in (".txt", ".jsonl") and "/" in text:
            raise PromptSourceError(f"prompts={text}: no such file (pass an existing .txt/.jsonl file or a prompt's text)")
        if not is_file:
            prompts = [text]
        elif path.suffix == ".jsonl":
            prompts = []
            for number, line in enumerate(_read_utf8(path).splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    prompts.append(str(row["prompt"]).strip())
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise PromptSourceError(f"{path}:{number}: expected a JSON object with a \"prompt\" field ({err})") from err
        else:
            lines = _read_utf8(path).splitlines()
            prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    unique = list(dict.fromkeys(p for p in prompts if p))
    if len(unique) < len(prompts):
        log.warning("%d empty or repeated prompt(s) dropped", len(prompts) - len(unique))
    if not unique:
        raise PromptSourceError(f"prompts={spec!r} holds no prompt")
    return unique


def image_name(prompt: str, sample_index: int) -> str:
    """Named by the prompt's text, so that another prompt list in the same folder never reuses a name."""
    from t2ir1.output_keys import prompt_digest

    return f"{IMAGES_DIR}/{prompt_digest(prompt)}_{sample_index:02d}.png"


def _done_samples(out_dir: Path, key: str) -> dict[tuple[str, int], dict]:
    """Rows of ``generations.jsonl`` of this settings ``key`` whose image exists, by ``(prompt, sample)``."""
    path = out_dir / GENERATIONS_JSONL
    done: dict[tuple[str, int], dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: that image is generated again
        if not isinstance(row, dict) or row.get("key") != key or "prompt" not in row:
            continue
        if row.get("path") == image_name(row["prompt"], int(row.get("sample", -1))) and (out_dir / row["path"]).is_file():
            done[(row["prompt"], int(row["sample"]))] = row
    return done


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_ema_if_asked(policy: JanusPolicy, cfg, entry: str) -> None:
    """``use_ema=true``: the checkpoint's EMA weights replace its raw trained weights."""
    if not cfg.get("use_ema"):
        return
    if not cfg.get("ckpt_path"):
        raise ValueError(
            f"{entry}: use_ema=true needs ckpt_path=<run>/checkpoints/last.ckpt (the EMA lives in training "
            "checkpoints of runs with algo.ema.decay set); or set use_ema=false"
        )
    from t2ir1.lit.ema import load_ema_weights

    load_ema_weights(policy, cfg.ckpt_path)


def load_policy(cfg) -> JanusPolicy:
    """The policy of ``cfg.model``, with ``cfg.ckpt_path``'s trained weights when given."""
    from t2ir1.export import load_policy_weights
    from t2ir1.validation import build_policy

    policy = build_policy(cfg.model, "generate.py model config")
    if cfg.get("ckpt_path"):
        load_policy_weights(policy, cfg.ckpt_path)
    load_ema_if_asked(policy, cfg, "generate.py")
    return policy.to(_resolve_device(cfg.get("device", "auto")))


def write_grid(out_dir: Path, rows: list[dict], max_images: int, columns: int, cell_size: int, cot_chars: int) -> Path:
    """``grid.png``: each image above its prompt and the start of its CoT."""
    from t2ir1.lit.grid import captioned_grid

    shown = rows[:max_images]
    images, captions = [], []
    for row in shown:
        with Image.open(out_dir / row["path"]) as image:
            images.append(image.convert("RGB"))
        cot = row["cot"]
        cot_text = "(no CoT)" if cot is None else cot[:cot_chars] + ("…" if len(cot) > cot_chars else "")
        captions.append(f"{row['prompt']}\nCoT: {cot_text}")
    grid = captioned_grid(images, captions, columns=columns, cell_size=cell_size)
    path = out_dir / GRID_PNG
    staging = path.with_name(path.name + ".tmp")
    grid.save(staging, format="PNG")
    staging.replace(path)
    return path


def _claim(cfg, out_dir: Path) -> str:
    """The settings key of this run, recorded in ``out_dir/run.json`` (refused if it differs)."""
    from t2ir1.output_keys import claim_output_dir, generation_settings
    from t2ir1.policy.prompts import load_reasoning_prompt

    settings = generation_settings(
        cfg.model,
        cfg.get("ckpt_path"),
        cfg.generation,
        seed=int(cfg.seed),
        use_cot=bool(cfg.use_cot),
        n_per_prompt=int(cfg.n_per_prompt),
        reasoning_text=load_reasoning_prompt(cfg.generation.reasoning_prompt) if cfg.use_cot else None,
        extra={"system_prompt": SYSTEM_PROMPT},
    )
    return claim_output_dir(
        out_dir,
        settings,
        earlier_outputs=(GENERATIONS_JSONL, IMAGES_DIR),
        how_to_fix="Pass another out_dir=... (or delete this folder to start over).",
    )


def run(cfg) -> list[dict]:
    """``python generate.py``: generate what is missing in ``cfg.out_dir``; returns one row per image."""
    from tqdm import tqdm

    from t2ir1.validation import check_generate_config, check_model_node

    check_generate_config(cfg)
    check_model_node(cfg.model, "generate.py model config")
    out_dir = Path(str(cfg.out_dir)).expanduser()
    prompts = read_prompts(cfg.prompts)
    n = int(cfg.n_per_prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = _claim(cfg, out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    done = _done_samples(out_dir, key)
    todo = [p for p in prompts if not all((p, j) in done for j in range(n))]
    log.info(
        "%d prompt(s) x %d image(s) %s semantic CoT; %d prompt(s) already done in %s",
        len(prompts), n, "with" if cfg.use_cot else "WITHOUT", len(prompts) - len(todo), out_dir,
    )
    index_of = {p: i for i, p in enumerate(prompts)}
    if todo:
        policy = load_policy(cfg)
        progress = tqdm(total=len(todo) * n, desc="generate", unit="img")
        jsonl_path = out_dir / GENERATIONS_JSONL

        def write(batch: list[Sample]) -> None:
            with jsonl_path.open("a", encoding="utf-8") as handle:
                for sample in batch:
                    if (sample.prompt, sample.sample_index) in done:
                        continue
                    name = image_name(sample.prompt, sample.sample_index)
                    staging = out_dir / (name + ".tmp")
                    sample.image.save(staging, format="PNG")
                    staging.replace(out_dir / name)  # an image is either whole or absent
                    row = {
                        "prompt_index": index_of[sample.prompt],
                        "prompt": sample.prompt,
                        "sample": sample.sample_index,
                        "cot": sample.cot,
                        "path": name,
                        "seed": generation_seed(int(cfg.seed), sample.prompt),
                        "key": key,
                    }
                    handle.write(json.dumps(row) + "\n")
                    done[(sample.prompt, sample.sample_index)] = row
            progress.update(len(batch))

        # null settings come from the model's run card (what it was trained with), else the paper's
        g = OmegaConf.create(generation_settings(OmegaConf.to_container(cfg.generation, resolve=True), policy, cfg.get("ckpt_path")))
        record_settings(out_dir, g)  # null config values came from a run card: say what was sampled
        try:
            generate_samples(
                policy,
                todo,
                n_per_prompt=n,
                use_cot=bool(cfg.use_cot),
                cfg_weight=float(g.cfg_weight),
                text_temperature=float(g.text_temperature),
                image_temperature=float(g.image_temperature),
                max_new_tokens=int(g.max_new_tokens),
                reasoning_template=g.reasoning_prompt,
                system_prompt=g.system_prompt,
                batch_size=int(g.batch_size),
                seed=int(cfg.seed),
                decode_micro_batch_size=int(g.decode_micro_batch_size),
                on_batch=write,
                **engine_options(g),
            )
        finally:
            progress.close()
    # rows written by an earlier run with another prompt list carry that list's index
    rows = [{**done[(p, j)], "prompt_index": i} for i, p in enumerate(prompts) for j in range(n)]
    if cfg.grid.enabled:
        grid = write_grid(out_dir, rows, int(cfg.grid.max_images), int(cfg.grid.columns), int(cfg.grid.cell_size), int(cfg.grid.cot_chars))
        log.info("grid: %s", grid)
    log.info("%d image(s) + %s in %s", len(rows), GENERATIONS_JSONL, out_dir)
    return rows
