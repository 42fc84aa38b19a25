"""Reward throughput: batched scoring vs one image at a time (as the original T2I-R1 does).

Every member runs on its tiny, randomly initialised variant (``t2ir1.testing.tiny_rewards``)
with 384x384 images (Janus-Pro's output size) and prompts of every task type; the
batched run uses ``micro_batch_size = --batch`` and one call for all images, the
baseline calls the member once per image. On the tiny variants the ratio measures
how much per-call overhead batching removes (Python, preprocessing, kernel
launches); on real models and GPUs, larger matrix products add to it.

``color`` has no model: its cost is per-pixel statistics (one nearest-prototype
search per pixel), which grows with the number of images whatever the batching, and
its per-call overhead is a small part of it; its ratio is shown for information and
the >= 3 target does not apply to it.

Overlap row (``--overlap``, on by default): one rollout + scoring step on the tiny Janus
(``GenerationEngine`` in chunks of ``--chunk-rows``) with the tiny paper ensemble
(hps + git + gdino + orm), first sequentially (generate everything, then score), then
with ``reward.async=true``'s path (``OverlappedScorer`` scores each decoded chunk on a
worker thread while the engine generates the next). It prints both step times, the
reward time hidden behind generation, and the reward wait still exposed after it.
With CPU threads <= half the cores, both sides get their own core.

Usage: python benchmarks/rewards.py [--images 32] [--batch 16] [--repeats 3] [--threads 1] [--no-overlap]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2ir1.data.records import NumeracyItem, PromptRecord, SpatialInfo


def _records_and_images(count: int, size: int) -> tuple[list[PromptRecord], list[Image.Image]]:
    templates = [
        PromptRecord(prompt="a red cat", task_type="color", nouns=("cat",), attr_nouns=("red cat",)),
        PromptRecord(
            prompt="a cat left of a dog",
            task_type="spatial",
            nouns=("cat", "dog"),
            spatial_info=SpatialInfo("cat", "dog", "left of"),
        ),
        PromptRecord(
            prompt="two dogs", task_type="numeracy", nouns=("dog",), numeracy_info=(NumeracyItem("dog", 2),)
        ),
        PromptRecord(prompt="a blue dog and a cat", task_type="object", nouns=("dog", "cat")),
    ]
    generator = np.random.default_rng(0)
    images = [
        Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)
    ]
    return [templates[i % len(templates)] for i in range(count)], images


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _members(folder: Path, batch: int) -> dict[str, object]:
    from t2ir1.rewards.color import ColorAgreementReward
    from t2ir1.rewards.convert_orm import convert
    from t2ir1.rewards.gdino import GroundingDinoReward
    from t2ir1.rewards.git import GitVQAReward
    from t2ir1.rewards.hps import HPSReward
    from t2ir1.rewards.orm import OutcomeRewardModel
    from t2ir1.testing.tiny_rewards import (
        build_tiny_gdino,
        build_tiny_git,
        build_tiny_hps,
        build_tiny_llava_next_checkpoint,
    )

    common = {"dtype": "float32", "micro_batch_size": batch}
    orm_path = convert(build_tiny_llava_next_checkpoint(folder), folder / "orm", vision_num_heads=2)
    return {
        "hps": HPSReward(**build_tiny_hps(folder / "hps"), **common),
        "git": GitVQAReward(model_path=str(build_tiny_git(folder)), **common),
        "gdino": GroundingDinoReward(model_path=str(build_tiny_gdino(folder)), **common),
        "orm": OutcomeRewardModel(model_path=str(orm_path), **common),
        "color": ColorAgreementReward(),
    }


def overlap_speed(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Step time (generate + score) sequential vs overlapped, on the tiny Janus with tiny members."""
    from t2ir1.policy.janus import JanusPolicy
    from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
    from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
    from t2ir1.rewards.ensemble import RewardEnsemble
    from t2ir1.rewards.overlap import OverlappedScorer
    from t2ir1.rollout.engine import GenerationEngine, SamplingOptions

    spec = TinyJanusSpec(image_size=args.overlap_image_size, patch_size=8)
    policy = JanusPolicy.from_pretrained(tiny_checkpoint(folder / "janus", spec), local_files_only=True).eval()
    options = SamplingOptions(max_new_tokens=args.cot_tokens, chunk_rows=args.chunk_rows, cfg_weight=5.0)
    engine = GenerationEngine(policy, options)
    members = {k: v for k, v in _members(folder / "members", args.batch).items() if k != "color"}
    reward = RewardEnsemble(members, {name: 1.0 for name in members})
    reward.setup(args.device)
    templates, _ = _records_and_images(args.prompts, 8)
    group = args.group_size
    prompts = [record.prompt for record in templates]
    seeds = list(range(len(prompts)))
    row_records = [record for record in templates for _ in range(group)]
    template = load_reasoning_prompt("default")

    def generate(on_images=None):
        return engine.generate(
            prompts, seeds, group_size=group, reasoning_template=template, system_prompt=SYSTEM_PROMPT, on_images=on_images
        )

    def sequential() -> dict[str, float]:
        start = time.perf_counter()
        generation = generate()
        generated = time.perf_counter()
        reward(row_records, generation.images)
        done = time.perf_counter()
        return {"step": done - start, "generate": generated - start, "score": done - generated}

    def overlapped() -> dict[str, float]:
        start = time.perf_counter()
        scorer = OverlappedScorer(reward, row_records)
        generate(on_images=scorer.on_images)
        generated = time.perf_counter()
        scorer.collect()
        done = time.perf_counter()
        return {"step": done - start, "generate": generated - start, "wait": done - generated}

    sequential(), overlapped()  # warm-up
    seq = [sequential() for _ in range(args.repeats)]
    ovl = [overlapped() for _ in range(args.repeats)]

    def median(runs, key):
        return statistics.median(run[key] for run in runs)

    return {
        "rows": len(row_records),
        "chunks": -(-len(row_records) // args.chunk_rows),
        "image_size": args.overlap_image_size,
        "seq_step": median(seq, "step"),
        "seq_generate": median(seq, "generate"),
        "seq_score": median(seq, "score"),
        "ovl_step": median(ovl, "step"),
        "ovl_generate": median(ovl, "generate"),
        "ovl_wait": median(ovl, "wait"),
    }


def print_overlap(row: dict[str, float], args: argparse.Namespace) -> None:
    hidden = row["seq_step"] - row["ovl_step"]
    print()
    print(
        f"## Scoring overlapped with generation (tiny Janus {row['image_size']}px, {row['rows']} rows in "
        f"{row['chunks']} chunks of {args.chunk_rows}, tiny hps+git+gdino+orm, {args.device}, {args.threads} thread(s))"
    )
    print(f"| {'mode':38s} | {'step s':>7s} | {'generate s':>10s} | {'reward s (exposed)':>18s} |")
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 12}|{'-' * 20}|")
    print(f"| {'sequential (generate, then score)':38s} | {row['seq_step']:7.3f} | {row['seq_generate']:10.3f} | {row['seq_score']:18.3f} |")
    print(f"| {'overlapped (reward.async=true)':38s} | {row['ovl_step']:7.3f} | {row['ovl_generate']:10.3f} | {row['ovl_wait']:18.3f} |")
    hidden_reward = row["seq_score"] - row["ovl_wait"]
    slowdown = row["ovl_generate"] - row["seq_generate"]
    print(
        f"step speed-up {row['seq_step'] / row['ovl_step']:.2f}x (saves {hidden:.3f} s per step). "
        f"Reward time hidden behind generation: {hidden_reward:.3f} s of {row['seq_score']:.3f} s "
        f"({100 * hidden_reward / row['seq_score']:.0f}%); still exposed: {row['ovl_wait']:.3f} s (the last chunk's "
        f"scoring, which nothing can hide); price paid: generation {slowdown:+.3f} s slower while the scorer shares "
        "the CPU (on GPU the reward models run on other devices or a server, and this price is ~0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="images scored per measurement")
    parser.add_argument("--batch", type=int, default=16, help="micro-batch size of the batched run")
    parser.add_argument("--size", type=int, default=384, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device to score on")
    parser.add_argument("--no-overlap", dest="overlap", action="store_false", help="skip the overlap row")
    parser.add_argument("--prompts", type=int, default=4, help="overlap row: prompts per step")
    parser.add_argument("--group-size", type=int, default=4, help="overlap row: images per prompt (G)")
    parser.add_argument("--chunk-rows", type=int, default=4, help="overlap row: image rows per engine chunk")
    parser.add_argument("--cot-tokens", type=int, default=16, help="overlap row: semantic CoT tokens")
    parser.add_argument("--overlap-image-size", type=int, default=64, help="overlap row: tiny Janus image side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records, images = _records_and_images(args.images, args.size)

    rows = []
    overlap_row = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.overlap:
            overlap_row = overlap_speed(Path(tmp) / "overlap", args)
        for name, member in _members(Path(tmp), args.batch).items():
            member.setup(args.device)
            batched = _time(lambda m=member: m(records, images), args.repeats)
            one_by_one = _time(
                lambda m=member: [m([r], [i]) for r, i in zip(records, images, strict=True)], args.repeats
            )
            rows.append((name, args.images / batched, args.images / one_by_one))
    # members whose cost is pixel statistics, not a model: the ratio target does not apply
    pixel_only = {"color"}

    print(
        f"## Reward throughput on tiny variants ({args.images} images of {args.size}px, batch {args.batch}, {args.device}, {args.threads} thread(s))"
    )
    print(
        f"| {'member':8s} | {'batched img/s':>13s} | {'one-by-one img/s':>16s} | {'ratio':>6s} | {'target >= 3':33s} |"
    )
    print(f"|{'-' * 10}|{'-' * 15}|{'-' * 18}|{'-' * 8}|{'-' * 35}|")
    for name, batched_rate, single_rate in rows:
        ratio = batched_rate / single_rate
        if name in pixel_only:
            verdict = "n/a (no model: pixel statistics)"
        else:
            verdict = "met" if ratio >= 3 else "NOT met"
        print(f"| {name:8s} | {batched_rate:13.1f} | {single_rate:16.1f} | {ratio:6.2f} | {verdict:33s} |")
    print(
        "target: ratio >= 3 for each model member (hps, git, gdino, orm); color has no model and its "
        "per-pixel work grows with the number of images, so batching has little per-call overhead to remove"
    )
    if overlap_row is not None:
        print_overlap(overlap_row, args)


if __name__ == "__main__":
    main()
