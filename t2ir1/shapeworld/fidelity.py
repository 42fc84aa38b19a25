"""How faithfully the image stage draws a layout it is given: ``python -m t2ir1.shapeworld.fidelity [CHECKPOINT]``.

BiCoT-GRPO can only teach a layout the image stage is able to draw. This check takes the
held-out prompts, builds a ground-truth scene for each (:func:`~t2ir1.shapeworld.prompts.scene_for`),
feeds its description (:func:`~t2ir1.shapeworld.prompts.describe`) to the image stage as
the CoT, exactly as the RL loop's image prompts do, samples ``samples`` images per prompt
and reads them with the exact detector. Per category it reports:

- ``correct``: images judged correct for the *prompt* (:func:`~t2ir1.shapeworld.reward.is_correct`,
  as in the held-out accuracy): the image stage's ceiling when the plan is perfect;
- ``drawn``: layout objects found with their shape and colour (one detection each);
- ``placed``: layout objects found *and* in the 3 x 3 region the description names;
- ``all_drawn`` / ``all_placed``: images in which every object is drawn / placed.

``drawn`` low means the model mixes up colours and shapes (binding); ``drawn`` high with
``placed`` low means it ignores the region words. The shipped checkpoint's figures are in
``experiments/shapeworld/README.md`` (section 3).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from t2ir1.data.records import PromptRecord
from t2ir1.policy.janus import JanusPolicy
from t2ir1.rewards.compositional import Detection
from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
from t2ir1.rollout.image_prompts import image_prompts
from t2ir1.rollout.sampling import prompt_generators, record_seed
from t2ir1.shapeworld.detector import ShapeDetector
from t2ir1.shapeworld.prompts import (
    CATEGORIES,
    HELDOUT_SEED,
    describe,
    heldout_records,
    region_at,
    scene_for,
    scene_seed,
)
from t2ir1.shapeworld.render import render
from t2ir1.shapeworld.reward import is_correct
from t2ir1.shapeworld.world import WORLD, Scene

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("correct", "drawn", "placed", "all_drawn", "all_placed")


def read_layout(scene: Scene, detections: Sequence[Detection]) -> tuple[int, int]:
    """``(drawn, placed)``: objects of ``scene`` matched by a detection of the same shape and
    colour (each detection used once, highest score first), and those of them whose detection
    centre lies in the object's own 3 x 3 region."""
    unused = list(detections)
    drawn = placed = 0
    for obj in scene.objects:
        match = next(
            (d for d in unused if d.label == obj.shape and d.attributes.get("color") == obj.color),
            None,
        )
        if match is None:
            continue
        unused.remove(match)
        drawn += 1
        x0, y0, x1, y1 = match.box
        placed += region_at((x0 + x1) / 2, (y0 + y1) / 2, scene.size) == region_at(*obj.center, scene.size)
    return drawn, placed


def layout_records(per_category: int, heldout_seed: int = HELDOUT_SEED) -> list[PromptRecord]:
    """The first ``per_category`` held-out records of every category (category-major)."""
    records = heldout_records(len(CATEGORIES) * max(per_category, 1) * 2, seed=heldout_seed)
    chosen = []
    for category in CATEGORIES:
        of_category = [r for r in records if r.task_type == category][:per_category]
        if len(of_category) < per_category:
            raise ValueError(
                f"fidelity: only {len(of_category)} held-out {category!r} records, {per_category} asked; "
                "ask for fewer per category"
            )
        chosen += of_category
    return chosen


@torch.no_grad()
def layout_fidelity(
    policy: JanusPolicy,
    records: Sequence[PromptRecord],
    samples: int = 4,
    seed: int = 0,
    layout_seed: int = 0,
    image_temperature: float = 1.0,
    cfg_weight: float = 1.0,
    batch_size: int = 40,
    detector: ShapeDetector | None = None,
) -> dict:
    """Draw ``samples`` images per record from its ground-truth layout and score them.

    Args:
        records: held-out records; each gets the scene ``scene_for(r, scene_seed(r, layout_seed))``.
        seed: sampling seed; record ``r`` samples with ``record_seed(seed, r.prompt_id)``.
        image_temperature, cfg_weight: the image sampler (the demo's: 1 and 1).
        batch_size: prompts per engine call.
    Returns:
        ``{"table": {category: {metric: fraction}, "overall": ...}, "scenes", "descriptions",
        "images" (record-major, ``samples`` each), "rows" (per image: correct, drawn, placed, objects)}``.
    """
    if samples < 1:
        raise ValueError(f"fidelity: samples={samples} must be >= 1")
    detector = detector or ShapeDetector(WORLD)
    engine = GenerationEngine(
        policy, SamplingOptions(image_temperature=image_temperature, cfg_weight=cfg_weight)
    )
    scenes = [scene_for(r, scene_seed(r, seed=layout_seed)) for r in records]
    descriptions = [describe(s, r) for s, r in zip(scenes, records, strict=True)]
    images: list[Image.Image] = []
    for first in range(0, len(records), batch_size):
        chunk = range(first, min(len(records), first + batch_size))
        layout = image_prompts(
            policy,
            [records[i].prompt for i in chunk for _ in range(samples)],
            [descriptions[i] for i in chunk for _ in range(samples)],
        )
        seeds = [record_seed(seed, records[i].prompt_id or records[i].prompt) for i in chunk]
        _, _, drawn = engine.sample_images(
            layout.ids,
            layout.mask,
            samples,
            prompt_generators(seeds, policy.device),
            position_ids=layout.positions,
            uncond_mask=layout.uncond_mask,
        )
        images += drawn
        log.info("fidelity: %d/%d prompts drawn", chunk.stop, len(records))
    rows = []
    for i, detections in enumerate(detector.detect(images)):
        record, scene = records[i // samples], scenes[i // samples]
        drawn_n, placed_n = read_layout(scene, detections)
        rows.append(
            {
                "category": record.task_type,
                "correct": bool(is_correct(record, detections)),
                "drawn": drawn_n,
                "placed": placed_n,
                "objects": len(scene.objects),
            }
        )
    return {
        "table": fidelity_table(rows),
        "scenes": scenes,
        "descriptions": descriptions,
        "images": images,
        "rows": rows,
    }


def fidelity_table(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per category (and ``overall`` = mean over categories) the fractions of :data:`METRICS`."""
    table: dict[str, dict[str, float]] = {}
    for category in CATEGORIES:
        mine = [r for r in rows if r["category"] == category]
        if not mine:
            continue
        objects = sum(r["objects"] for r in mine)
        table[category] = {
            "correct": float(np.mean([r["correct"] for r in mine])),
            "drawn": sum(r["drawn"] for r in mine) / objects,
            "placed": sum(r["placed"] for r in mine) / objects,
            "all_drawn": float(np.mean([r["drawn"] == r["objects"] for r in mine])),
            "all_placed": float(np.mean([r["placed"] == r["objects"] for r in mine])),
        }
    if table:
        table["overall"] = {m: float(np.mean([v[m] for v in table.values()])) for m in METRICS}
    return table


def format_fidelity(table: dict[str, dict[str, float]]) -> str:
    """A markdown table (percent), one row per category."""
    lines = ["| category | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for category, values in table.items():
        lines.append(f"| {category} | " + " | ".join(f"{100 * values[m]:.1f}" for m in METRICS) + " |")
    return "\n".join(lines)


def fidelity_grid(result: dict, rows_per_category: int = 2, cell: int = 96) -> Image.Image:
    """Ground-truth render (left, framed) then the samples, for the first prompts of each category."""
    samples = len(result["images"]) // len(result["scenes"])
    picked: dict[str, list[int]] = {}
    for i, row in enumerate(result["rows"][::samples]):
        picked.setdefault(row["category"], [])
        if len(picked[row["category"]]) < rows_per_category:
            picked[row["category"]].append(i)
    order = [i for ids in picked.values() for i in ids]
    grid = Image.new("RGB", ((samples + 1) * (cell + 4), len(order) * (cell + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for row, i in enumerate(order):
        y = row * (cell + 4) + 2
        grid.paste(render(result["scenes"][i]).resize((cell, cell), Image.NEAREST), (2, y))
        draw.rectangle([0, y - 2, cell + 3, y + cell + 1], outline="black")
        for j in range(samples):
            image = result["images"][i * samples + j].resize((cell, cell), Image.NEAREST)
            grid.paste(image, ((j + 1) * (cell + 4) + 2, y))
    return grid


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m t2ir1.shapeworld.fidelity",
        description="Draw held-out ground-truth layouts with a ShapeWorld checkpoint and score the images.",
    )
    parser.add_argument(
        "checkpoint", nargs="?", default=None, help="checkpoint directory (default: the shipped one)"
    )
    parser.add_argument(
        "--per-category", type=int, default=40, help="held-out prompts per category (default 40)"
    )
    parser.add_argument("--samples", type=int, default=4, help="images per prompt (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--layout-seed", type=int, default=0, help="seed of the ground-truth scenes (default 0)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--out", type=Path, default=None, help="write fidelity.json, fidelity.md and fidelity.png here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    from t2ir1.shapeworld import load_policy

    policy = load_policy(args.checkpoint)
    result = layout_fidelity(
        policy,
        layout_records(args.per_category),
        samples=args.samples,
        seed=args.seed,
        layout_seed=args.layout_seed,
    )
    text = format_fidelity(result["table"])
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {"settings": settings, "table": result["table"], "rows": result["rows"]}
        (args.out / "fidelity.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        (args.out / "fidelity.md").write_text(text + "\n", encoding="utf-8")
        fidelity_grid(result).save(args.out / "fidelity.png")
        log.info("wrote %s/fidelity.{json,md,png}", args.out)
    return result["table"]


if __name__ == "__main__":
    main()
