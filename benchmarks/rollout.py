"""Rollout speed and log-prob memory, measured side by side in one run (ratios, not seconds).

Generation, four ways, on the same prompts and settings:

* **engine** -- ``t2ir1.rollout.engine`` (the only path the platform generates by);
* **pre-engine loop** -- ``t2ir1.testing.legacy_rollout``, t2ir1's loop before the engine
  (eager ``LlamaModel.forward`` per token over a growing ``DynamicCache``);
* **transformers generate** -- ``JanusForConditionalGeneration.generate(generation_mode="image")``
  (equal-length prompts, as it requires);
* **original structure** -- ``t2ir1.testing.original_rollout``, the original T2I-R1 loop
  re-stated with its file:line citations (right-padded prompts, interleaved cond/uncond rows,
  chunks of 32, dynamic cache, ``torch.multinomial``).

Sections: (a) image tokens on the tiny Janus at CFG 5; (b) the whole rollout (CoT + image
tokens + VQ decode) at the ShapeWorld demo's exact shapes (shipped checkpoint, B = 4, G = 8,
CoT <= 40 tokens, 64 image tokens, CFG 1); (c) decode-step latency at Janus-Pro-1B's real
dimensions (random weights, a few rows), next to the time to read the weights once at this
machine's measured copy bandwidth (the floor of a memory-bound step); then the log-prob memory.

Usage: python benchmarks/rollout.py [--repeats 3] [--skip-real] [--real-rows 2] [--real-tokens 16] [--real-repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from t2ir1.policy.logprobs import LOGPROB_CHUNK_LOGITS


def _time_all(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved round by round (fair under load)."""
    for fn in fns.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _table(title: str, seconds: dict[str, float], work: float, unit: str, baseline: str) -> None:
    print(f"\n## {title}")
    print(f"| {'method':34s} | {'seconds':>8s} | {unit:>12s} | {'engine speed-up':>15s} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 14}|{'-' * 17}|")
    for name, value in seconds.items():
        print(f"| {name:34s} | {value:8.3f} | {work / value:12.1f} | {value / seconds[baseline]:15.2f} |")


def tiny_image_tokens(repeats: int) -> dict[str, float]:
    """(a) Image tokens of 16 rows (4 prompts x 4) at CFG 5 on the tiny Janus."""
    from t2ir1.policy.janus import JanusPolicy
    from t2ir1.policy.prompts import image_prompt
    from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
    from t2ir1.rollout.sampling import prompt_generators
    from t2ir1.testing.legacy_rollout import sample_image_tokens
    from t2ir1.testing.original_rollout import original_image_tokens, right_padded_image_prompts

    cache = os.environ.get("T2IR1_CACHE", os.path.join(tempfile.gettempdir(), "t2ir1-bench"))
    spec = TinyJanusSpec(image_size=64, patch_size=8, codebook_size=1024, hidden_size=128, num_hidden_layers=2)
    policy = JanusPolicy.from_pretrained(tiny_checkpoint(cache, spec), local_files_only=True).eval()
    prompts = [f"a photo of {n} red cubes left of a blue ball" for n in ("two", "three", "four", "five")]
    texts = [p for p in prompts for _ in range(4)]
    ids, mask = policy.encode_image_prompts(texts, [None] * len(texts))  # equal lengths: generate accepts them
    right_ids, right_mask = right_padded_image_prompts(policy, [image_prompt(t, None) for t in texts])
    engine = GenerationEngine(policy, SamplingOptions(cfg_weight=5.0))
    seconds = _time_all(
        {
            "engine": lambda: engine.sample_images(ids, mask, 4, prompt_generators(range(4)), decode=False),
            "pre-engine loop": lambda: sample_image_tokens(policy, ids, mask, 5.0, 1.0, prompt_generators(range(4))),
            "transformers generate": lambda: policy.model.generate(
                input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=True, guidance_scale=5.0
            ),
            "original structure": lambda: original_image_tokens(policy, right_ids, right_mask, 5.0),
        },
        repeats,
    )
    _table("(a) tiny Janus, 16 rows x 64 image tokens, CFG 5 (tokens only)", seconds, 16 * 64, "image tok/s", "engine")
    return seconds


def demo_rollout(repeats: int) -> dict[str, float]:
    """(b) The ShapeWorld demo's rollout: B = 4 prompts, G = 8, CoT <= 40, 64 image tokens, CFG 1, decode."""
    from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
    from t2ir1.rollout.sampling import prompt_generators
    from t2ir1.shapeworld import load_policy
    from t2ir1.shapeworld.prompts import heldout_records
    from t2ir1.testing import legacy_rollout as legacy
    from t2ir1.testing.original_rollout import original_rollout

    policy = load_policy().eval()
    template = load_reasoning_prompt("default")
    batches = [[r.prompt for r in heldout_records(40)[i : i + 4]] for i in range(0, 40, 4)]
    turn = {"engine": 0, "legacy": 0, "original": 0}
    engine = GenerationEngine(policy, SamplingOptions(max_new_tokens=40, cfg_weight=1.0))

    def batch(name):  # each call draws the next batch: same prompts for every method, round by round
        turn[name] += 1
        return batches[turn[name] % len(batches)]

    def engine_step():
        prompts = batch("engine")
        engine.generate(prompts, list(range(4)), group_size=8, reasoning_template=template, system_prompt=SYSTEM_PROMPT)

    def legacy_step():
        prompts = batch("legacy")
        generators = prompt_generators(range(4))
        ids, mask = policy.encode_semantic_prompts(prompts, template, SYSTEM_PROMPT)
        semantic = legacy.sample_semantic_cot(policy, ids, mask, 8, 40, 1.0, generators)
        img_ids, img_mask = policy.encode_image_prompts([p for p in prompts for _ in range(8)], semantic.texts)
        tokens = legacy.sample_image_tokens(policy, img_ids, img_mask, 1.0, 1.0, generators)
        policy.to_pil(legacy.decode_images(policy, tokens))

    def original_step():
        original_rollout(policy, batch("original"), template, SYSTEM_PROMPT, 8, 40, 1.0)

    seconds = _time_all({"engine": engine_step, "pre-engine loop": legacy_step, "original structure": original_step}, repeats)
    _table("(b) ShapeWorld demo rollout: B 4 x G 8, CoT <= 40, 64 image tokens, CFG 1, VQ decode", seconds, 32, "images/s", "engine")
    print(f"engine vs pre-engine loop: {seconds['pre-engine loop'] / seconds['engine']:.2f}x (target >= 3)")
    return seconds


def copy_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    source = torch.empty(nbytes // 4, dtype=torch.float32).normal_()
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def real_size_steps(rows: int, tokens: int, repeats: int) -> dict[str, float]:
    """(c) Per-token latency of image decoding at Janus-Pro-1B's dimensions (random weights, fp32, CFG 5)."""
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
    from t2ir1.rollout.sampling import prompt_generators
    from t2ir1.testing.legacy_rollout import sample_image_tokens
    from t2ir1.testing.real_size import random_janus_policy

    policy = random_janus_policy("janus_pro_1b", dtype=torch.float32)
    policy.model.config.vision_config.num_image_tokens = tokens  # a shortened image: the step is the unit
    ids, mask = policy.encode_image_prompts(["a photo of a red cube"] * rows, [None] * rows)
    engine = GenerationEngine(policy, SamplingOptions(cfg_weight=5.0))
    seconds = _time_all(
        {
            "engine": lambda: engine.sample_images(ids, mask, rows, prompt_generators([0]), decode=False),
            "pre-engine loop": lambda: sample_image_tokens(policy, ids, mask, 5.0, 1.0, prompt_generators([0])),
            "transformers generate": lambda: policy.model.generate(
                input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=True, guidance_scale=5.0,
                max_new_tokens=tokens,
            ),
        },
        repeats,
    )
    per_step = {name: value / tokens for name, value in seconds.items()}
    weight_bytes = sum(
        p.numel() * p.element_size()
        for part in (policy.language_model, policy.generation_head, policy.model.model.generation_embeddings,
                     policy.model.model.generation_aligner)
        for p in part.parameters()
    )  # fmt: skip
    floor = weight_bytes / copy_bandwidth()
    print(f"\n## (c) Janus-Pro-1B dimensions, random fp32 weights, {rows} rows x {tokens} image tokens, CFG 5")
    print(f"weights read per step: {weight_bytes / 2**30:.2f} GiB; at the measured copy bandwidth that takes {1e3 * floor:.0f} ms")
    print(f"| {'method':34s} | {'ms / token':>10s} | {'x weight-read time':>18s} | {'engine speed-up':>15s} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 20}|{'-' * 17}|")
    for name, value in per_step.items():
        print(f"| {name:34s} | {1e3 * value:10.1f} | {value / floor:18.2f} | {value / per_step['engine']:15.2f} |")
    return seconds


_CHILD = r"""
import json, sys, torch
from t2ir1.policy.logprobs import naive_logprobs, positions_per_chunk, selective_logprobs
variant, rows, positions, hidden_size, vocab, chunk, head_kind = sys.argv[1:8]
rows, positions, hidden_size, vocab, chunk = map(int, (rows, positions, hidden_size, vocab, chunk))
torch.manual_seed(0)
if head_kind == "image":  # Janus generation head: proj_out -> GELU -> vision_head
    head = torch.nn.Sequential(torch.nn.Linear(hidden_size, hidden_size), torch.nn.GELU(), torch.nn.Linear(hidden_size, vocab))
else:  # lm_head
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
head.requires_grad_(False)  # Janus's generation head is frozen; lm_head's grad is the same size either way
def step(n_rows, n_pos):
    hidden = torch.randn(n_rows, n_pos, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (n_rows, n_pos))
    if variant == "naive":
        logp = naive_logprobs(hidden, targets, head)
    else:
        logp = selective_logprobs(hidden, targets, head, chunk_size=positions_per_chunk(chunk, vocab))
    logp.sum().backward()
def status_kib(field):  # this process's own figures (getrusage's ru_maxrss survives exec from a large parent)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
step(1, 8)  # warm-up: one-time allocations of kernels and autograd are not the path's cost
base = status_kib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
step(rows, positions)
print(json.dumps({"peak_mib": (status_kib("VmHWM") - base) / 1024}))
"""


def logprob_memory(variant: str, rows: int, positions: int, hidden: int, vocab: int, chunk: int, head_kind: str) -> float:
    # a fixed mmap threshold makes glibc return every large tensor to the OS when freed, so the
    # process's peak RSS above the warmed-up baseline is the peak of live tensor memory
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, variant, str(rows), str(positions), str(hidden), str(vocab), str(chunk), head_kind],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--skip-real", action="store_true", help="skip (c), the Janus-Pro-1B-size model (8 GB of RAM)")
    parser.add_argument("--real-rows", type=int, default=2, help="rows of (c) (CFG doubles them)")
    parser.add_argument("--real-tokens", type=int, default=16, help="image tokens per row in (c)")
    parser.add_argument(
        "--real-repeats", type=int, default=7,
        help="timed rounds of (c): the three loops are within ~5%% of each other, and 2-3 rounds on a "
        "shared machine can rank them either way",
    )  # fmt: skip
    parser.add_argument("--hidden", type=int, default=2048, help="hidden size for the memory test (Janus-Pro-1B: 2048)")
    parser.add_argument("--memory-rows", type=int, default=2, help="rows of the memory test")
    parser.add_argument("--cot-len", type=int, default=256, help="CoT length of the text memory test")
    parser.add_argument("--chunk", type=int, default=LOGPROB_CHUNK_LOGITS, help="logits per chunk (algo.logprob_chunk_logits)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    tiny = tiny_image_tokens(args.repeats)
    print(f"engine vs transformers generate: {tiny['transformers generate'] / tiny['engine']:.2f}x (target >= 1)")
    print(f"engine vs original structure:    {tiny['original structure'] / tiny['engine']:.2f}x")
    demo_rollout(args.repeats)
    if not args.skip_real:
        real = real_size_steps(args.real_rows, args.real_tokens, args.real_repeats)
        print(f"engine vs pre-engine loop at 1B size:      {real['pre-engine loop'] / real['engine']:.2f}x (target >= 1)")
        print(f"engine vs transformers generate at 1B size: {real['transformers generate'] / real['engine']:.2f}x (target >= 1)")

    print(f"\n## Log-prob peak memory, forward + backward ({args.memory_rows} rows, hidden {args.hidden}, {args.chunk} logits per chunk)")
    print(f"| {'head':32s} | {'naive MiB':>10s} | {'chunked MiB':>11s} | {'ratio':>6s} |")
    print(f"|{'-' * 34}|{'-' * 12}|{'-' * 13}|{'-' * 8}|")
    for label, positions, vocab, kind in (
        ("image: 16,384 codes x 576 pos", 576, 16384, "image"),
        (f"text: 102,400 tokens x {args.cot_len} pos", args.cot_len, 102400, "text"),
    ):
        naive = logprob_memory("naive", args.memory_rows, positions, args.hidden, vocab, args.chunk, kind)
        chunked = logprob_memory("chunked", args.memory_rows, positions, args.hidden, vocab, args.chunk, kind)
        print(f"| {label:32s} | {naive:10.1f} | {chunked:11.1f} | {chunked / naive:6.3f} |")
    print("target: chunked / naive <= 0.5")


if __name__ == "__main__":
    main()
