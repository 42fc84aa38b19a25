"""Rollout speed and log-prob memory, measured side by side in one run.

1. Image tokens/s of t2ir1's batched CFG rollout vs transformers' own
   ``JanusForConditionalGeneration.generate(generation_mode="image")`` at the same batch,
   and vs generating one prompt at a time (B x G = 16 rows), on the tiny Janus; and the
   ``w = 1`` path (no unconditional rows; the ShapeWorld demo samples at CFG 1) vs ``w = 5``.
2. Peak memory of the chunked log-prob path vs naive ``log_softmax`` + ``gather``
   (forward + backward) at Janus-Pro's head sizes: 16,384 image codes over 576 positions,
   102,400 text tokens over a CoT; each variant in a fresh process, peak RSS above baseline.

Usage: python benchmarks/rollout.py [--rows 16] [--repeats 3] [--hidden 2048]
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


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def rollout_speed(rows: int, repeats: int, spec_kwargs: dict) -> list[tuple[str, float, float]]:
    from t2ir1.policy.janus import JanusPolicy
    from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
    from t2ir1.rollout.sampling import prompt_generators
    from t2ir1.testing.legacy_rollout import sample_image_tokens

    cache = os.environ.get("T2IR1_CACHE", os.path.join(tempfile.gettempdir(), "t2ir1-bench"))
    policy = JanusPolicy.from_pretrained(tiny_checkpoint(cache, TinyJanusSpec(**spec_kwargs)), local_files_only=True).eval()
    prompts = [f"a photo of {n} red cubes left of a blue ball" for n in ("two", "three", "four", "five")]
    group = rows // len(prompts)
    texts = [p for p in prompts for _ in range(group)]
    ids, mask = policy.encode_image_prompts(texts, [None] * len(texts))
    n_tokens = rows * policy.num_image_tokens

    def ours_batched():
        sample_image_tokens(policy, ids, mask, cfg_weight=5.0, temperature=1.0, generators=prompt_generators(range(len(prompts))))

    def hf_batched():
        policy.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=True, guidance_scale=5.0)

    def ours_no_guidance():
        sample_image_tokens(policy, ids, mask, cfg_weight=1.0, temperature=1.0, generators=prompt_generators(range(len(prompts))))

    def ours_one_at_a_time():
        for row in range(rows):
            sample_image_tokens(policy, ids[row : row + 1], mask[row : row + 1], cfg_weight=5.0, temperature=1.0)

    results = []
    for name, fn in (("t2ir1 batched", ours_batched), ("transformers generate (same batch)", hf_batched), ("t2ir1 one prompt at a time", ours_one_at_a_time), ("t2ir1 batched, w = 1 (no uncond.)", ours_no_guidance)):
        seconds = _time(fn, repeats)
        results.append((name, seconds, n_tokens / seconds))
    return results


_CHILD = r"""
import json, resource, sys, torch
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
step(1, 8)  # warm-up: one-time allocations of kernels and autograd are not the path's cost
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
step(rows, positions)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": (peak - base) / 1024}))
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
    parser.add_argument("--rows", type=int, default=16, help="B x G rows of the rollout (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--hidden", type=int, default=2048, help="hidden size for the memory test (Janus-Pro-1B: 2048)")
    parser.add_argument("--memory-rows", type=int, default=2, help="rows of the memory test")
    parser.add_argument("--cot-len", type=int, default=256, help="CoT length of the text memory test")
    parser.add_argument("--chunk", type=int, default=1 << 21, help="logits per chunk (algo.logprob_chunk_logits)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    spec = {"image_size": 64, "patch_size": 8, "codebook_size": 1024, "hidden_size": 128, "num_hidden_layers": 2}
    print(f"## Rollout speed (tiny Janus: 8x8 = 64 image tokens, codebook 1024, hidden 128; {args.rows} rows, CFG)")
    results = rollout_speed(args.rows, args.repeats, spec)
    ours = results[0][2]
    print(f"| {'method':36s} | {'seconds':>8s} | {'image tok/s':>11s} | {'t2ir1 / this':>12s} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 13}|{'-' * 14}|")
    for name, seconds, rate in results:
        print(f"| {name:36s} | {seconds:8.3f} | {rate:11.1f} | {ours / rate:12.2f} |")
    print(f"ratio vs transformers generate: {ours / results[1][2]:.2f} (target >= 1.0)")
    print(f"ratio vs one prompt at a time:  {ours / results[2][2]:.2f} (target >= 4 for B x G = 16)")
    print(f"w = 1 vs w = 5, t2ir1 batched:   {results[3][2] / ours:.2f} (half the rows; per-token overhead keeps it under 2)")

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
