"""Images/s of Janus-Pro image generation on one GPU, next to the memory-bandwidth roofline.

Builds Janus-Pro-1B and -7B from their real dimensions with random bf16 weights (no
download) and times, at batch 16 / 64 / 128 (CFG 5, an image prompt of ~300 tokens, as a
CoT makes it, 576 image tokens):

* **engine** -- ``t2ir1.rollout.engine`` (static KV cache; ``--compile`` = its captured step);
* **transformers generate** -- ``JanusForConditionalGeneration.generate(generation_mode="image")``;
* **original structure** -- the original T2I-R1 loop (``t2ir1.testing.original_rollout``).

Roofline: a decode step must read the weights once plus every row's KV cache at its current
length (CFG rows included); summed over the 576 steps, over the device's copy bandwidth
measured at the start, that is the least time an image batch can take. Printed targets:
engine >= 5x the original structure, engine >= 50% of the roofline at the largest batch.

Runs unchanged on a machine whose Python has only torch and transformers (no Hydra, no
network); ``--dry-run`` runs the same code at tiny sizes on CPU (a test does, so it cannot
rot). The table is printed last and written to ``--out`` (markdown) and ``--out``.json.

Usage: python benchmarks/gpu_rollout.py [--out gpu_rollout.md] [--compile none|reduce-overhead] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's t2ir1, installed or not

# (preset, batch, method): at most ~8 timed configurations, ~4 minutes on one H100/H200
PLAN = [
    ("janus_pro_1b", 16, "engine"),
    ("janus_pro_1b", 64, "engine"),
    ("janus_pro_1b", 128, "engine"),
    ("janus_pro_1b", 16, "transformers generate"),
    ("janus_pro_1b", 16, "original structure"),
    ("janus_pro_1b", 64, "original structure"),
    ("janus_pro_7b", 16, "engine"),
    ("janus_pro_7b", 64, "engine"),
]
DRY_PLAN = [
    ("tiny", 2, "engine"),
    ("tiny", 4, "engine"),
    ("tiny", 2, "transformers generate"),
    ("tiny", 2, "original structure"),
]


@dataclass
class Row:
    preset: str
    batch: int
    method: str
    seconds: float | None  # None: out of memory
    images_per_s: float | None
    roofline_images_per_s: float
    note: str = ""


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy (bytes read + bytes written), best of 5."""
    source = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        target.copy_(source)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def roofline_seconds(policy, rows: int, prompt_len: int, n_tokens: int, bandwidth: float) -> float:
    """Least time for ``rows`` images: per step, the weights once + each row's KV cache at its length."""
    lm = policy.language_model
    config = lm.config
    weight_bytes = sum(
        p.numel() * p.element_size()
        for part in (lm, policy.generation_head, policy.model.model.generation_embeddings, policy.model.model.generation_aligner)
        for p in part.parameters()
    )
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(lm.parameters()).element_size()
    kv_per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * element  # keys + values, one row
    cache_tokens = sum(prompt_len + step for step in range(n_tokens))  # every step reads all earlier positions
    total = n_tokens * weight_bytes + 2 * rows * cache_tokens * kv_per_token  # CFG: 2 rows per image
    return total / bandwidth


def build(preset: str, device: torch.device):
    if preset == "tiny":
        import tempfile

        from t2ir1.policy.janus import JanusPolicy
        from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint

        path = tiny_checkpoint(Path(tempfile.gettempdir()) / "t2ir1-gpu-bench", TinyJanusSpec())
        return JanusPolicy.from_pretrained(path, local_files_only=True).to(device).eval()
    from t2ir1.testing.real_size import random_janus_policy

    return random_janus_policy(preset, dtype=torch.bfloat16, device=device)


def prompts(policy, rows: int, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` image prompts of exactly ``prompt_len`` tokens ending in ``<begin_of_image>``."""
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(10, 400, (rows, prompt_len - 2), generator=generator)  # ids valid in every vocabulary
    ids = torch.cat([torch.full((rows, 1), policy.bos_id), body, torch.full((rows, 1), policy.boi_id)], dim=1)
    return ids.to(policy.device), torch.ones_like(ids).to(policy.device)


def run_method(policy, method: str, ids, mask, compile_mode: str) -> None:
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
    from t2ir1.rollout.sampling import prompt_generators
    from t2ir1.testing.original_rollout import original_image_tokens

    rows = ids.shape[0]
    if method == "engine":
        engine = GenerationEngine(policy, SamplingOptions(cfg_weight=5.0, compile=compile_mode))
        engine.sample_images(ids, mask, rows, prompt_generators([0], policy.device), decode=False)
    elif method == "transformers generate":
        policy.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=True, guidance_scale=5.0)
    else:
        original_image_tokens(policy, ids, mask, cfg_weight=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_rollout.md", help="markdown table (a .json beside it)")
    parser.add_argument("--compile", default="none", help="engine decode step: none | default | reduce-overhead")
    parser.add_argument("--prompt-len", type=int, default=300, help="image prompt tokens (a CoT context)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (tests)")
    args = parser.parse_args()

    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not dry:
        raise SystemExit("gpu_rollout.py: no CUDA device; use --dry-run to check the script on CPU")
    plan = DRY_PLAN if dry else PLAN
    prompt_len = 12 if dry else args.prompt_len
    bandwidth = copy_bandwidth(device, (1 << 24) if dry else (1 << 31))
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(device)
    print(f"device: {name}; copy bandwidth {bandwidth / 1e9:.0f} GB/s; CFG 5; prompt {prompt_len} tokens", flush=True)

    rows_out: list[Row] = []
    policy, built = None, None
    for preset, batch, method in plan:
        if built != preset:
            policy = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            start = time.perf_counter()
            policy, built = build(preset, device), preset
            print(f"built {preset} in {time.perf_counter() - start:.0f} s", flush=True)
        n_tokens = policy.num_image_tokens
        ids, mask = prompts(policy, batch, prompt_len)
        floor = roofline_seconds(policy, batch, prompt_len, n_tokens, bandwidth)
        try:
            run_method(policy, method, ids[: min(2, batch)], mask[: min(2, batch)], args.compile)  # warm-up
            _sync(device)
            start = time.perf_counter()
            run_method(policy, method, ids, mask, args.compile)
            _sync(device)
            seconds = time.perf_counter() - start
            row = Row(preset, batch, method, seconds, batch / seconds, batch / floor)
        except torch.OutOfMemoryError:
            row = Row(preset, batch, method, None, None, batch / floor, note="OOM")
            torch.cuda.empty_cache()
        rows_out.append(row)
        rate = "OOM" if row.images_per_s is None else f"{row.images_per_s:.2f} img/s"
        print(f"{preset} batch {batch} {method}: {rate} (roofline {row.roofline_images_per_s:.1f})", flush=True)

    lines = [
        f"device: {name}, copy bandwidth {bandwidth / 1e9:.0f} GB/s, CFG 5, prompt {prompt_len} tokens, "
        f"{'tiny' if dry else 576} image tokens, engine compile={args.compile}",
        "",
        "| model | batch | method | images/s | roofline images/s | % of roofline |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows_out:
        rate = "OOM" if r.images_per_s is None else f"{r.images_per_s:.2f}"
        share = "" if r.images_per_s is None else f"{100 * r.images_per_s / r.roofline_images_per_s:.0f}%"
        lines.append(f"| {r.preset} | {r.batch} | {r.method} | {rate} | {r.roofline_images_per_s:.1f} | {share} |")
    by_key = {(r.preset, r.batch, r.method): r for r in rows_out}
    for preset in dict.fromkeys(r.preset for r in rows_out):
        engine_rows = [r for r in rows_out if r.preset == preset and r.method == "engine" and r.images_per_s]
        if not engine_rows:
            continue
        top = max(engine_rows, key=lambda r: r.batch)
        lines.append(
            f"\n{preset}: engine at batch {top.batch} = {100 * top.images_per_s / top.roofline_images_per_s:.0f}% of the "
            "roofline (target >= 50%)"
        )
        for batch in sorted({r.batch for r in rows_out if r.preset == preset}):
            engine, original = by_key.get((preset, batch, "engine")), by_key.get((preset, batch, "original structure"))
            if engine and original and engine.images_per_s and original.images_per_s:
                lines.append(f"{preset} batch {batch}: engine / original structure = "
                             f"{engine.images_per_s / original.images_per_s:.1f}x (target >= 5x)")  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(args.out)
    out.write_text(table + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows_out], indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
