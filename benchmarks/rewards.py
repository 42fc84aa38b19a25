"""Reward throughput: batched scoring vs one image at a time (as the original T2I-R1 does).

Every member runs on its tiny, randomly initialised variant (``t2ir1.rewards.tiny``)
with 384x384 images (Janus-Pro's output size) and prompts of every task type; the
batched run uses ``micro_batch_size = --batch`` and one call for all images, the
baseline calls the member once per image. On the tiny variants the ratio measures
how much per-call overhead batching removes (Python, preprocessing, kernel
launches); on real models and GPUs, larger matrix products add to it.

``color`` has no model: its cost is per-pixel statistics (one nearest-prototype
search per pixel), which grows with the number of images whatever the batching, and
its per-call overhead is a small part of it; its ratio is shown for information and
the >= 3 target does not apply to it.

Usage: python benchmarks/rewards.py [--images 32] [--batch 16] [--repeats 3] [--threads 1]
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
    from t2ir1.rewards.tiny import (
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="images scored per measurement")
    parser.add_argument("--batch", type=int, default=16, help="micro-batch size of the batched run")
    parser.add_argument("--size", type=int, default=384, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device to score on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records, images = _records_and_images(args.images, args.size)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
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


if __name__ == "__main__":
    main()
